#!/usr/bin/env bash
# postfix-policy-up.sh - start a private Postfix instance that asks mxguard's
# policy service, over a unix socket on one port and over TCP on another.
#
# usage: postfix-policy-up.sh DIR UNIX_PORT INET_PORT POLICY_ADDR
#   DIR          absolute path, wiped and rebuilt (config, queue, log, mailboxes)
#   UNIX_PORT    smtpd whose recipient restrictions end with
#                check_policy_service unix:private/mxguard
#                (the socket is DIR/spool/private/mxguard: make it before mail comes)
#   INET_PORT    smtpd with check_policy_service inet:POLICY_ADDR
#   POLICY_ADDR  host:port of the policy service's TCP listener
# LISTEN (environment, default 127.0.0.1) is the address of both smtpd
# listeners (a namespace's address: ip netns exec NS env LISTEN=192.0.2.1 ...).
# Needs root and the postfix package; /etc/postfix is neither changed nor
# started. Stop with testdata/smtpguard/postfix-down.sh DIR. Mail for alice@ and
# bob@example.com lands in DIR/vmail/example.com/NAME/new; the log is
# DIR/log/mail.log.
set -euo pipefail
DIR=${1:?DIR}; UNIXP=${2:?UNIX_PORT}; INETP=${3:?INET_PORT}; POLICY=${4:?POLICY_ADDR}; LISTEN=${LISTEN:-127.0.0.1}
case "$DIR" in /*) ;; *) echo "postfix-policy-up.sh: DIR must be absolute" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "postfix-policy-up.sh: must run as root" >&2; exit 2; }
command -v postfix >/dev/null || { echo "postfix-policy-up.sh: postfix not installed" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$HERE/../smtpguard/postfix-down.sh" "$DIR" >/dev/null 2>&1 || true
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
myhostname = mx.policy.example
mydomain = policy.example
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
disable_dns_lookups = yes
smtp_host_lookup = native
virtual_mailbox_domains = example.com
virtual_mailbox_maps = texthash:$DIR/etc/vmailbox
virtual_mailbox_base = $DIR/vmail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_banner = \$myhostname ESMTP
smtpd_timeout = 30s
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# As the README recommends: after reject_unauth_destination, default_action=DUNNO.
policy_unix = check_policy_service { unix:private/mxguard, default_action=DUNNO, timeout=10s }
policy_inet = check_policy_service { inet:$POLICY, default_action=DUNNO, timeout=10s }
smtpd_policy_service_retry_delay = 1s
CF
cat >"$DIR/etc/master.cf" <<CF
$LISTEN:$UNIXP inet n - n - - smtpd
  -o syslog_name=postfix/unix
  -o smtpd_recipient_restrictions=reject_unauth_destination,reject_unlisted_recipient,\$policy_unix
$LISTEN:$INETP inet n - n - - smtpd
  -o syslog_name=postfix/inet
  -o smtpd_recipient_restrictions=reject_unauth_destination,reject_unlisted_recipient,\$policy_inet
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
postfix -c "$DIR/etc" check
postfix -c "$DIR/etc" start </dev/null >"$DIR/log/start.log" 2>&1 ||
    { echo "postfix-policy-up.sh: start failed" >&2; cat "$DIR/log/start.log" "$DIR/log/mail.log" >&2 2>/dev/null; exit 1; }
for port in "$UNIXP" "$INETP"; do
    for _ in $(seq 100); do
        ss -Hltn "sport = :$port" | grep -q . && continue 2
        sleep 0.1
    done
    echo "postfix-policy-up.sh: nothing listens on $LISTEN:$port" >&2; exit 1
done
echo "postfix-policy-up.sh: Postfix $(postconf -c "$DIR/etc" -h mail_version) in $DIR (unix policy :$UNIXP, inet policy :$INETP)"
