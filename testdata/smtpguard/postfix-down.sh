#!/usr/bin/env bash
# postfix-down.sh DIR - stop the instance started by postfix-up.sh (keeps DIR).
set -uo pipefail
DIR=${1:?DIR}
[ -f "$DIR/etc/main.cf" ] || exit 0
postfix -c "$DIR/etc" stop 2>/dev/null || true
for _ in $(seq 50); do
    pid=$(tr -d ' ' <"$DIR/spool/pid/master.pid" 2>/dev/null) || true
    [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
exit 0
