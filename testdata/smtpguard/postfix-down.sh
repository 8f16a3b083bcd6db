#!/usr/bin/env bash
# postfix-down.sh DIR - stop the instance started by postfix-up.sh (keeps DIR).
# `postfix stop` refuses when run outside the network namespace the
# instance runs in (its check of the master fails there); then the master
# is stopped by its pid: SIGTERM (what `postfix stop` sends), and SIGKILL
# if it is still there after 5 s.
set -uo pipefail
DIR=${1:?DIR}
[ -f "$DIR/etc/main.cf" ] || exit 0
pid=$(tr -d ' ' 2>/dev/null <"$DIR/spool/pid/master.pid") || true
postfix -c "$DIR/etc" stop 2>/dev/null || { [ -n "${pid:-}" ] && kill -TERM "$pid" 2>/dev/null; }
[ -n "${pid:-}" ] || exit 0
# running: the pid is still a Postfix master, not gone or a zombie
# (/proc/PID/stat: "PID (COMM) STATE ..."; no procps needed)
running() {
    local stat
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ "$stat" == *"(master) "* && "$stat" != *") Z "* ]]
}
for i in $(seq 50); do
    running || exit 0
    sleep 0.1
done
kill -KILL "$pid" 2>/dev/null
exit 0
