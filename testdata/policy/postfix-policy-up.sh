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
# The instance is testdata/smtpguard/postfix-up.sh's (same mailboxes, log and
# rules), built without starting, then changed here with postconf: its two
# smtpd services become the policy ports and the XCLIENT-only settings go.
# Needs root and the postfix package; /etc/postfix is neither changed nor
# started. Stop with testdata/smtpguard/postfix-down.sh DIR. Mail for alice@ and
# bob@example.com lands in DIR/vmail/example.com/NAME/new; the log is
# DIR/log/mail.log.
set -euo pipefail
DIR=${1:?DIR}; UNIXP=${2:?UNIX_PORT}; INETP=${3:?INET_PORT}; POLICY=${4:?POLICY_ADDR}; LISTEN=${LISTEN:-127.0.0.1}
UP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../smtpguard" && pwd)/postfix-up.sh
export LISTEN
POSTFIX_UP_STEP=config "$UP" "$DIR" "$UNIXP" "$INETP"

postconf -c "$DIR/etc" -e \
    myhostname=mx.policy.example mydomain=policy.example \
    disable_dns_lookups=yes smtp_host_lookup=native \
    smtpd_policy_service_retry_delay=1s \
    'policy_unix=check_policy_service { unix:private/mxguard, default_action=DUNNO, timeout=10s }' \
    "policy_inet=check_policy_service { inet:$POLICY, default_action=DUNNO, timeout=10s }"
# As the README recommends: the policy comes after reject_unauth_destination,
# with default_action=DUNNO. The guard's settings that would change what the
# test's clients see (XCLIENT, HELO required, pipelining, error limits) go.
postconf -c "$DIR/etc" -X smtpd_authorized_xclient_hosts smtpd_helo_required \
    smtpd_client_restrictions smtpd_recipient_restrictions \
    smtpd_soft_error_limit smtpd_hard_error_limit
for svc in unix:"$UNIXP" inet:"$INETP"; do
    name=${svc%%:*}; port=${svc#*:}
    postconf -c "$DIR/etc" -M "$LISTEN:$port/inet=$LISTEN:$port inet n - n - - smtpd \
-o syslog_name=postfix/$name \
-o smtpd_recipient_restrictions=reject_unauth_destination,reject_unlisted_recipient,\$policy_$name"
done

POSTFIX_UP_STEP=start "$UP" "$DIR" "$UNIXP" "$INETP" >/dev/null
echo "postfix-policy-up.sh: Postfix $(postconf -c "$DIR/etc" -h mail_version) in $DIR (unix policy :$UNIXP, inet policy :$INETP)"
