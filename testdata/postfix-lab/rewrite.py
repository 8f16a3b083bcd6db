#!/usr/bin/env python3
"""Rewrite lab client addresses (127.0.0.x) to documentation addresses.

usage: rewrite.py CLIENTS_JSON IN OUT

CLIENTS_JSON is what drive.py --clients-out wrote (lab_ip -> ip). 127.0.0.1
(the host itself) and 127.0.0.2 (the lab DNSBL's answer, "listed ... as
127.0.0.2") stay. Any other 127.0.0.x without a mapping is an error,
so a new client cannot leak a loopback address into the committed log.
"""
import json
import re
import sys

ADDR = re.compile(r"(?<![\d.])127\.0\.0\.(\d{1,3})(?![\d])")


def main():
    clients = json.load(open(sys.argv[1]))
    m = {c["lab_ip"]: c["ip"] for c in clients}
    m["127.0.0.1"] = "127.0.0.1"
    m["127.0.0.2"] = "127.0.0.2"
    unknown = set()

    def sub(mo):
        ip = mo.group(0)
        if ip not in m:
            unknown.add(ip)
            return ip
        return m[ip]

    with open(sys.argv[2], encoding="utf-8", errors="surrogateescape") as f:
        text = ADDR.sub(sub, f.read())
    if unknown:
        sys.exit("rewrite.py: no mapping for %s" % ", ".join(sorted(unknown)))
    with open(sys.argv[3], "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)


if __name__ == "__main__":
    main()
