#!/usr/bin/env bash
# capture.sh - run a private Postfix with anvil limits, STARTTLS and
# warn_if_reject on loopback, drive it with drive.py, and write the
# rewritten log to limits.log next to this script.
#
# usage: capture.sh [DIR]   (default /tmp/mxguard-limits-lab; wiped)
# Needs root and the postfix package. The system Postfix is not touched.
# Ports 127.0.0.1:2625 (smtpd), :2626 (postscreen); DNS stub 127.0.0.154.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STUB=$HERE/../../../testdata/postfix-lab/dnsstub.py
DIR=${1:-/tmp/mxguard-limits-lab}
DNS=127.0.0.154
[ "$(id -u)" = 0 ] || { echo "capture.sh: must run as root" >&2; exit 2; }
case "$DIR" in /*) ;; *) echo "capture.sh: DIR must be absolute" >&2; exit 2;; esac

stop() {
    [ -f "$DIR/etc/main.cf" ] && postfix -c "$DIR/etc" stop >/dev/null 2>&1 || true
    if [ -s "$DIR/dnsstub.pid" ]; then
        pid=$(cat "$DIR/dnsstub.pid")
        grep -q dnsstub.py "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" || true
        rm -f "$DIR/dnsstub.pid"
    fi
}
stop
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,log,data,spool/etc,vmail/example.com}
chown postfix:postfix "$DIR/data"; chmod 700 "$DIR/data"; chmod 755 "$DIR" "$DIR/log"
chown -R 65534:65534 "$DIR/vmail"
printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$DNS" >"$DIR/spool/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n' >"$DIR/spool/etc/hosts"
printf 'hosts: files dns\nservices: files\n' >"$DIR/spool/etc/nsswitch.conf"
for f in services host.conf localtime; do [ -e "/etc/$f" ] && cp -L "/etc/$f" "$DIR/spool/etc/$f"; done

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mx.limits.example \
    -keyout "$DIR/etc/key.pem" -out "$DIR/etc/cert.pem" 2>/dev/null
chmod 600 "$DIR/etc/key.pem"

cat >"$DIR/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $DIR/log/mail.log
maillog_file_prefixes = $DIR/log
myhostname = mx.limits.example
mydomain = limits.example
myorigin = \$myhostname
mydestination =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled
default_transport = error:5.4.4 no outbound delivery
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
biff = no
smtputf8_enable = no
virtual_mailbox_domains = example.com
virtual_mailbox_maps = hash:$DIR/etc/vmailbox
virtual_mailbox_base = $DIR/vmail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
# a table cleanup reads: changing it makes cleanup restart
canonical_maps = hash:$DIR/etc/canonical
smtpd_banner = \$myhostname ESMTP
smtpd_timeout = 10s
smtpd_error_sleep_time = 0
anvil_rate_time_unit = 60s
smtpd_client_connection_rate_limit = 4
smtpd_client_connection_count_limit = 2
smtpd_client_message_rate_limit = 2
smtpd_client_recipient_rate_limit = 3
smtpd_client_new_tls_session_rate_limit = 2
smtpd_tls_security_level = may
smtpd_tls_cert_file = $DIR/etc/cert.pem
smtpd_tls_key_file = $DIR/etc/key.pem
smtpd_tls_loglevel = 1
smtpd_tls_session_cache_database =
smtpd_tls_session_cache_timeout = 0
smtpd_helo_required = no
smtpd_helo_restrictions =
    warn_if_reject check_helo_access hash:$DIR/etc/helo_access,
    warn_if_reject reject_non_fqdn_helo_hostname,
    warn_if_reject reject_invalid_helo_hostname
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
    warn_if_reject reject_unlisted_recipient,
    reject_unknown_helo_hostname
# postscreen with STARTTLS through tlsproxy, and a short cache cleanup
postscreen_tls_security_level = may
postscreen_cache_map = btree:\$data_directory/postscreen_cache
postscreen_cache_cleanup_interval = 5s
postscreen_greet_wait = 1s
postscreen_pipelining_enable = yes
CF
cat >"$DIR/etc/master.cf" <<CF
127.0.0.1:2625 inet n - y - - smtpd
127.0.0.1:2626 inet n - y - 1 postscreen
smtpd     pass  - - y - - smtpd
tlsproxy  unix  - - y - 0 tlsproxy
pickup    unix n - y 60 1 pickup
cleanup   unix n - y - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - y 1000? 1 tlsmgr
rewrite   unix - - y - - trivial-rewrite
bounce    unix - - y - 0 bounce
defer     unix - - y - 0 bounce
trace     unix - - y - 0 bounce
verify    unix - - y - 1 verify
flush     unix n - y 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - y - - showq
error     unix - - y - - error
retry     unix - - y - - error
discard   unix - - y - - discard
virtual   unix - n n - - virtual
anvil     unix - - y - 1 anvil
scache    unix - - y - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CF
printf 'alice@example.com example.com/alice/\nbob@example.com example.com/bob/\n' >"$DIR/etc/vmailbox"
printf 'friend REJECT You are not my friend\n' >"$DIR/etc/helo_access"
printf 'old@sender.example new@sender.example\n' >"$DIR/etc/canonical"
postmap -c "$DIR/etc" "$DIR/etc/vmailbox" "$DIR/etc/helo_access" "$DIR/etc/canonical"

setsid python3 "$STUB" "$HERE/zone.txt" "$DNS" 53 "$DIR/dnsstub.pid" </dev/null >"$DIR/log/dnsstub.log" 2>&1 &
for _ in $(seq 50); do [ -s "$DIR/dnsstub.pid" ] && break; sleep 0.1; done
postfix -c "$DIR/etc" check
postfix -c "$DIR/etc" start </dev/null >"$DIR/log/start.log" 2>&1
for port in 2625 2626; do
    for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && continue 2; sleep 0.1; done
    echo "capture.sh: nothing listens on :$port" >&2; exit 1
done

python3 "$HERE/drive.py" "$DIR"
# change a table cleanup has open: the next message makes it restart
printf 'old@sender.example newer@sender.example\n' >"$DIR/etc/canonical"
sleep 1.1; touch "$DIR/etc/canonical"; postmap -c "$DIR/etc" "$DIR/etc/canonical"
python3 "$HERE/drive.py" "$DIR" table
sleep 6 # postscreen cache cleanup
postfix -c "$DIR/etc" reload >/dev/null 2>&1
sleep 1
stop
sleep 1
python3 "$HERE/../../../testdata/postfix-lab/rewrite.py" "$HERE/clients.json" "$DIR/log/mail.log" "$HERE/limits.log"
echo "capture.sh: $(wc -l <"$HERE/limits.log") lines in $HERE/limits.log"
