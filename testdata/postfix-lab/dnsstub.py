#!/usr/bin/env python3
"""Tiny authoritative DNS responder for the Postfix lab (stdlib only).

It answers A, MX, PTR and TXT from a zone file of lines "name TYPE value"
and says NXDOMAIN for any name it does not know, so Postfix never waits for
a resolver that loopback cannot reach. Only the chrooted Postfix daemons of
the lab use it: their etc/resolv.conf (inside the lab queue directory) names
this server; the host's own resolver is left alone.

usage: dnsstub.py ZONEFILE LISTEN_IP [PORT] [PIDFILE]
"""
import socket
import struct
import sys

TYPES = {"A": 1, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}


def load(path):
    zone = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, rtype, value = line.split(None, 2)
            zone.setdefault(name.lower().rstrip("."), []).append((TYPES[rtype.upper()], value))
    return zone


def enc_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def rdata(rtype, value):
    if rtype == 1:
        return socket.inet_aton(value)
    if rtype == 12:
        return enc_name(value)
    if rtype == 15:
        pref, host = value.split()
        return struct.pack("!H", int(pref)) + enc_name(host)
    if rtype == 16:
        b = value.strip('"').encode()
        return bytes([len(b)]) + b
    raise ValueError(rtype)


def parse_question(msg):
    i, labels = 12, []
    while msg[i]:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, _qclass = struct.unpack("!HH", msg[i + 1:i + 5])
    return ".".join(labels).lower(), qtype, msg[12:i + 5]


def answer(zone, msg):
    qid, flags = struct.unpack("!HH", msg[:4])
    name, qtype, question = parse_question(msg)
    rrs = zone.get(name)
    rcode = 0 if rrs is not None else 3  # NXDOMAIN
    answers = b""
    count = 0
    for rtype, value in rrs or []:
        if rtype == qtype or qtype == 255:
            rd = rdata(rtype, value)
            answers += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 300, len(rd)) + rd
            count += 1
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode  # QR AA RD RA
    return struct.pack("!HHHHHH", qid, rflags, 1, count, 0, 0) + question + answers


def main():
    zone = load(sys.argv[1])
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 53
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[2], port))
    if len(sys.argv) > 4:
        with open(sys.argv[4], "w") as f:
            f.write("%d\n" % __import__("os").getpid())
    while True:
        msg, peer = sock.recvfrom(4096)
        try:
            sock.sendto(answer(zone, msg), peer)
        except Exception as e:  # a malformed query must not stop the lab
            print("dnsstub: %s: %s" % (peer, e), file=sys.stderr)


if __name__ == "__main__":
    main()
