#!/usr/bin/env bash
# latency-fail2ban.sh [N] - how long fail2ban's postfix jail takes from the
# moment the 5th "User unknown" reject of a client is appended to the log to
# the moment it runs its ban action; N clients (default 20), one at a time.
# Compare with mxguard's daemon on the same machine:
#   go test ./cmd/mxguard -run '^$' -bench DaemonLatency -benchtime 200x
# Runs a private fail2ban-server (own config dir, socket, in-memory db, a
# stamp-file action: no firewall is touched). Needs Debian's fail2ban.
set -euo pipefail
N=${1:-20}
BACKEND=${BACKEND:-pyinotify}   # pyinotify | polling
command -v fail2ban-server >/dev/null || { echo "needs fail2ban (apt-get install fail2ban)" >&2; exit 2; }
T=$(mktemp -d)
trap 'fail2ban-client -c "$T/etc" stop >/dev/null 2>&1 || true; rm -rf "$T"' EXIT
cp -r /etc/fail2ban "$T/etc"
rm -f "$T/etc/jail.d/"*
: > "$T/mail.log"
cat > "$T/etc/fail2ban.local" <<CONF
[Definition]
loglevel = INFO
logtarget = $T/f2b.log
socket = $T/f2b.sock
pidfile = $T/f2b.pid
dbfile = :memory:
CONF
cat > "$T/etc/action.d/stamp.conf" <<'CONF'
[Definition]
actionban = echo "<ip> $(date +%%s.%%N)" >> <stampfile>
actionunban = true
CONF
cat > "$T/etc/jail.local" <<CONF
[DEFAULT]
backend = $BACKEND
[postfix]
enabled = true
filter = postfix[mode=aggressive]
logpath = $T/mail.log
maxretry = 5
findtime = 600
bantime = 600
action = stamp[stampfile="$T/bans"]
CONF
fail2ban-server -c "$T/etc" -b >/dev/null
for _ in $(seq 100); do fail2ban-client -c "$T/etc" ping >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
lat=()
for i in $(seq "$N"); do
	ip="203.0.113.$i"
	for j in 1 2 3 4; do
		echo "$(date '+%b %e %H:%M:%S') mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[$ip]: 550 5.1.1 <u$j@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<s@x.example> to=<u$j@example.com> proto=ESMTP helo=<friend>" >> "$T/mail.log"
	done
	sleep 0.2
	t0=$(date +%s.%N)
	echo "$(date '+%b %e %H:%M:%S') mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[$ip]: 550 5.1.1 <u5@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<s@x.example> to=<u5@example.com> proto=ESMTP helo=<friend>" >> "$T/mail.log"
	for _ in $(seq 200); do grep -q "^$ip " "$T/bans" 2>/dev/null && break; sleep 0.01; done
	t1=$(grep "^$ip " "$T/bans" | awk '{print $2}')
	[ -n "$t1" ] || { echo "no ban for $ip within 2s" >&2; continue; }
	lat+=("$(echo "($t1 - $t0) * 1000" | bc -l)")
done
printf '%s\n' "${lat[@]}" | sort -n | awk -v backend="$BACKEND" '
	{ v[NR] = $1 }
	END { if (NR == 0) exit 1
	      printf "fail2ban %s (%s backend): %d bans, append->ban p50 %.1f ms, max %.1f ms\n", "'"$(fail2ban-server -V | head -1)"'", backend, NR, v[int((NR+1)/2)], v[NR] }'
