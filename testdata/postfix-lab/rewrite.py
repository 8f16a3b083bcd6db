#!/usr/bin/env python3
"""Rewrite lab client addresses (127.0.0.x) to documentation addresses.

usage: rewrite.py [--sessions] CLIENTS_JSON IN OUT

CLIENTS_JSON is what drive.py --clients-out wrote (lab_ip -> ip). 127.0.0.1
(the host itself) and 127.0.0.2 (the lab DNSBL's answer, "listed ... as
127.0.0.2") stay. Any other 127.0.0.x without a mapping is an error,
so a new client cannot leak a loopback address into the committed log.

--sessions (for a mail.log only): clients with "session_offsets" ran their
sessions a fraction of a second apart; move session k of such a client as
a whole to (time of the log's first line) + session_offsets[k] seconds.
A session is every line of the smtpd process that logged "connect from
NAME[LAB_IP]", up to and including its "disconnect from", plus every line
of the queue ids that session created (cleanup, qmgr, delivery). All lines
of a session move by one constant, so the gaps inside it stay as they
were; apart from the time stamp the lines are not changed. Moved lines are
merged into the others by time (the order of the others is kept). Postfix's
own shutdown lines at the end move behind the last moved session. The
result is checked: every smtpd process must still log connect ... disconnect
without another session in between.
"""
import datetime
import json
import re
import sys

ADDR = re.compile(r"(?<![\d.])127\.0\.0\.(\d{1,3})(?![\d])")
LINE = re.compile(r"^([A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d) (\S+) (\S+)\[(\d+)\]: (.*)$")
CONNECT = re.compile(r"^connect from \S*\[([0-9.]+)\]")
DISCONNECT = re.compile(r"^disconnect from ")
QUEUE_ID = re.compile(r"^([0-9A-F]{10,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{12,}): ")
STAMP = "%b %d %H:%M:%S"


def parse_stamp(s, year):
    return datetime.datetime.strptime("%d %s" % (year, s), "%Y " + STAMP)


def move_sessions(lines, clients):
    """Move the planned sessions (see the module doc); returns new lines."""
    plans = {c["lab_ip"]: c["session_offsets"] for c in clients if c.get("session_offsets")}
    if not plans:
        return lines
    year = datetime.date.today().year
    parsed = [LINE.match(l) for l in lines]
    first = next(m for m in parsed if m)
    anchor = parse_stamp(first.group(1), year)

    shift = {}        # line index -> seconds
    open_sess = {}    # (program, pid) -> (lab ip, delta)
    qid_delta = {}    # queue id -> delta
    seen = {ip: 0 for ip in plans}
    for i, m in enumerate(parsed):
        if not m:
            continue
        stamp, _, prog, pid, msg = m.groups()
        key = (prog, pid)
        c = CONNECT.match(msg)
        if c and c.group(1) in plans and "smtpd" in prog:
            ip = c.group(1)
            k = seen[ip]
            seen[ip] += 1
            if k >= len(plans[ip]):
                sys.exit("rewrite.py: %s has more sessions than planned (%d)" % (ip, len(plans[ip])))
            target = anchor + datetime.timedelta(seconds=plans[ip][k])
            open_sess[key] = (ip, (target - parse_stamp(stamp, year)).total_seconds())
        if key in open_sess:
            delta = open_sess[key][1]
            shift[i] = delta
            q = QUEUE_ID.match(msg)
            if q:
                qid_delta[q.group(1)] = delta
            if DISCONNECT.match(msg):
                del open_sess[key]
            continue
        q = QUEUE_ID.match(msg)
        if q and q.group(1) in qid_delta:
            shift[i] = qid_delta[q.group(1)]
    for ip, n in seen.items():
        if n != len(plans[ip]):
            sys.exit("rewrite.py: %s: %d sessions in the log, %d planned" % (ip, n, len(plans[ip])))
    if open_sess:
        sys.exit("rewrite.py: sessions without disconnect: %s" % sorted(open_sess))

    def restamp(i, delta):
        m = parsed[i]
        t = parse_stamp(m.group(1), year) + datetime.timedelta(seconds=delta)
        stamp = t.strftime(STAMP)
        if m.group(1)[4] == " " and stamp[4] == "0":  # keep syslog's " 5" style
            stamp = stamp[:4] + " " + stamp[5:]
        return t, stamp + lines[i][len(m.group(1)):]

    moved = sorted((restamp(i, d)[0], i, restamp(i, d)[1]) for i, d in shift.items())
    last_moved = moved[-1][0]
    # Postfix's shutdown (and whatever its daemons log on the way out)
    # follows the last moved session.
    stop = next((i for i, m in enumerate(parsed)
                 if m and "stopping the Postfix mail system" in m.group(5)), None)
    tail = []
    if stop is not None:
        delta = (last_moved - parse_stamp(parsed[stop].group(1), year)).total_seconds() + 1
        for i in range(stop, len(lines)):
            if i not in shift and parsed[i]:
                tail.append(restamp(i, max(delta, 0))[1])
                shift[i] = None
    rest = [(parse_stamp(parsed[i].group(1), year) if parsed[i] else None, lines[i])
            for i in range(len(lines)) if i not in shift]

    out, j = [], 0
    last = anchor
    for t, line in rest:
        t = t or last
        last = t
        while j < len(moved) and moved[j][0] < t:
            out.append(moved[j][2])
            j += 1
        out.append(line)
    out.extend(m[2] for m in moved[j:])
    out.extend(tail)
    check_sessions(out)
    return out


def check_sessions(lines):
    """Every smtpd process logs connect ... disconnect, one session at a time."""
    inside = {}
    for n, l in enumerate(lines, 1):
        m = LINE.match(l)
        if not m or "smtpd" not in m.group(3):
            continue
        key = (m.group(3), m.group(4))
        if CONNECT.match(m.group(5)):
            if inside.get(key):
                sys.exit("rewrite.py: line %d: %s[%s] connects again before disconnect" % (n, *key))
            inside[key] = True
        elif DISCONNECT.match(m.group(5)):
            inside[key] = False


def main():
    args = sys.argv[1:]
    sessions = args[:1] == ["--sessions"]
    if sessions:
        args = args[1:]
    if len(args) != 3:
        sys.exit("usage: rewrite.py [--sessions] CLIENTS_JSON IN OUT")
    clients = json.load(open(args[0]))
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

    with open(args[1], encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    if sessions:
        lines = text.split("\n")
        end = lines.pop() if lines and lines[-1] == "" else None
        lines = move_sessions(lines, clients)
        text = "\n".join(lines) + ("\n" if end is not None else "")
    text = ADDR.sub(sub, text)
    if unknown:
        sys.exit("rewrite.py: no mapping for %s" % ", ".join(sorted(unknown)))
    with open(args[2], "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)


if __name__ == "__main__":
    main()
