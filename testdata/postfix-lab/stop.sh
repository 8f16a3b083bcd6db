#!/usr/bin/env bash
# stop.sh - stop the lab Postfix, Dovecot and DNS stub started by setup.sh.
# usage: stop.sh [DIR]   (default /tmp/mxguard-postfix-lab). Keeps DIR.
set -uo pipefail
DIR=${1:-/tmp/mxguard-postfix-lab}
[ -f "$DIR/etc/main.cf" ] || exit 0
postfix -c "$DIR/etc" stop 2>/dev/null || true
if [ -f "$DIR/dovecot/dovecot.conf" ]; then
    doveadm -c "$DIR/dovecot/dovecot.conf" stop 2>/dev/null || true
fi
if [ -s "$DIR/dnsstub.pid" ]; then
    pid=$(cat "$DIR/dnsstub.pid")
    # only our own stub: check its command line before signalling
    if grep -q dnsstub.py "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid"; fi
    rm -f "$DIR/dnsstub.pid"
fi
# wait for the master to be gone (its pid file is in the queue directory)
for _ in $(seq 50); do
    pid=$(tr -d ' ' <"$DIR/spool/pid/master.pid" 2>/dev/null) || true
    if [ -z "${pid:-}" ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
done
exit 0
