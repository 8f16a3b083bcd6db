#!/usr/bin/env bash
# postfix-up.sh - start a private Postfix instance as the guard's upstream.
#
# usage: postfix-up.sh DIR SMTPD_PORT PROXY_PORT
#   DIR         absolute path, wiped and rebuilt (config, queue, log, mailboxes)
#   SMTPD_PORT  127.0.0.1 listener that accepts XCLIENT from 127.0.0.1
#   PROXY_PORT  127.0.0.1 listener that expects a PROXY v1 header
# LISTEN (environment, default 127.0.0.1) is the address of both listeners:
# a namespace's own address when the instance runs in a network namespace
# (ip netns exec NS env LISTEN=192.0.2.1 postfix-up.sh ...).
# POSTFIX_UP_STEP (environment) lets a caller change the instance before it
# starts (as testdata/policy/postfix-policy-up.sh does): "config" only
# (re)builds DIR and does not start; "start" then starts the instance that
# is in DIR (postconf -c DIR/etc edits kept) and waits for both listeners,
# with the same arguments. Unset, both run.
# Needs root and the postfix package. The system Postfix (/etc/postfix) is
# neither changed nor started. Stop with postfix-down.sh DIR.
# Mail for alice@ and bob@example.com lands in DIR/vmail/example.com/NAME/new;
# everything is logged to DIR/log/mail.log.
set -euo pipefail
DIR=${1:?DIR}; SMTPD=${2:?SMTPD_PORT}; PROXY=${3:?PROXY_PORT}; LISTEN=${LISTEN:-127.0.0.1}
case "$DIR" in /*) ;; *) echo "postfix-up.sh: DIR must be absolute" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "postfix-up.sh: must run as root" >&2; exit 2; }
command -v postfix >/dev/null || { echo "postfix-up.sh: postfix not installed" >&2; exit 2; }
STEP=${POSTFIX_UP_STEP:-all}
case "$STEP" in all|config|start) ;; *) echo "postfix-up.sh: POSTFIX_UP_STEP must be config or start" >&2; exit 2;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "$STEP" != start ]; then
"$HERE/postfix-down.sh" "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,log,data,spool,vmail/example.com}
chown postfix:postfix "$DIR/data"; chmod 700 "$DIR/data"
chown -R 65534:65534 "$DIR/vmail"

cat >"$DIR/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $DIR/log/mail.log
maillog_file_prefixes = $DIR/log
myhostname = upstream.lab.example
mydomain = lab.example
myorigin = \$myhostname
mydestination =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled
default_transport = error:5.4.4 no outbound delivery
relay_domains =
inet_interfaces = $LISTEN
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
biff = no
smtputf8_enable = no
virtual_mailbox_domains = example.com
virtual_mailbox_maps = texthash:$DIR/etc/vmailbox
virtual_mailbox_base = $DIR/vmail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_banner = \$myhostname ESMTP
smtpd_timeout = 30s
smtpd_helo_required = yes
# The guard (127.0.0.1) may tell the real client with XCLIENT.
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_client_restrictions = reject_unauth_pipelining
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unlisted_recipient
smtpd_soft_error_limit = 10
smtpd_hard_error_limit = 20
CF
cat >"$DIR/etc/master.cf" <<CF
$LISTEN:$SMTPD inet n - n - - smtpd
$LISTEN:$PROXY inet n - n - - smtpd
  -o syslog_name=postfix/proxy
  -o smtpd_upstream_proxy_protocol=haproxy
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
CF
printf '%s\n' 'alice@example.com example.com/alice/' 'bob@example.com example.com/bob/' >"$DIR/etc/vmailbox"
fi
[ "$STEP" != config ] || exit 0
postfix -c "$DIR/etc" check
postfix -c "$DIR/etc" start </dev/null >"$DIR/log/start.log" 2>&1 ||
    { echo "postfix-up.sh: start failed" >&2; cat "$DIR/log/start.log" "$DIR/log/mail.log" >&2 2>/dev/null; exit 1; }
for port in "$SMTPD" "$PROXY"; do
    for _ in $(seq 100); do
        ss -Hltn "sport = :$port" | grep -q . && continue 2
        sleep 0.1
    done
    echo "postfix-up.sh: nothing listens on $LISTEN:$port" >&2; exit 1
done
echo "postfix-up.sh: Postfix $(postconf -c "$DIR/etc" -h mail_version) in $DIR (xclient $LISTEN:$SMTPD, proxy $LISTEN:$PROXY)"
