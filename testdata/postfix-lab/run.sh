#!/usr/bin/env bash
# run.sh - build the lab Postfix, drive the lab clients at it, capture the log.
#
# usage: run.sh [OUTDIR]   (default: $LAB_OUT, else testdata/lab beside this
#        directory, or testdata/lab-classes for LAB_SCENARIOS=classes)
# env:   LAB_DIR (default /tmp/mxguard-postfix-lab), LAB_KEEP=1 leaves the
#        instance running; LAB_SCENARIOS=default|classes picks drive.py's
#        scenario set (and setup.sh's configuration for it); the LAB_* ports
#        of setup.sh apply.
# Writes OUTDIR/mail.log (client addresses rewritten to RFC 5737 ranges),
# OUTDIR/clients.json and OUTDIR/transcript.txt (the clients' side).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCENARIOS=${LAB_SCENARIOS:-default}
case "$SCENARIOS" in
default) OUT=${1:-${LAB_OUT:-$HERE/../lab}} ;;
classes) OUT=${1:-${LAB_OUT:-$HERE/../lab-classes}} ;;
*) echo "run.sh: LAB_SCENARIOS must be default or classes: $SCENARIOS" >&2; exit 2 ;;
esac
export LAB_SCENARIOS=$SCENARIOS
DIR=${LAB_DIR:-/tmp/mxguard-postfix-lab}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# stop whatever setup.sh got running, even when it fails half way
trap '[ "${LAB_KEEP:-}" = 1 ] || "$HERE/stop.sh" "$DIR"' EXIT
"$HERE/setup.sh" "$DIR"

python3 "$HERE/drive.py" \
    --smtpd "${LAB_SMTPD:-127.0.0.1:2525}" --postscreen "${LAB_PSCREEN:-127.0.0.1:2526}" \
    --submission "${LAB_SUBMIT:-127.0.0.1:2587}" --remote-mx "127.0.0.1:${LAB_REMOTE_PORT:-2598}" \
    --limited "${LAB_LIMITED:-127.0.0.1:2527}" --policy "127.0.0.1:${LAB_POLICY_PORT:-2597}" \
    --scenarios "$SCENARIOS" \
    --clients-out "$DIR/clients.lab.json" --transcript "$DIR/log/transcript.txt"

# Wait until the queue manager is done with what was accepted (the deferred
# message stays) and the log has been quiet for 2 seconds.
for _ in $(seq 60); do
    busy=$(find "$DIR/spool/incoming" "$DIR/spool/active" -type f 2>/dev/null | wc -l)
    age=$(( $(date +%s) - $(stat -c %Y "$DIR/log/mail.log") ))
    [ "$busy" = 0 ] && [ "$age" -ge 2 ] && break
    sleep 0.5
done
if [ "${LAB_KEEP:-}" != 1 ]; then
    "$HERE/stop.sh" "$DIR"
    sleep 1  # postlogd writes the last lines on its way out
fi

python3 "$HERE/rewrite.py" --sessions "$DIR/clients.lab.json" "$DIR/log/mail.log" "$OUT/mail.log"
python3 "$HERE/rewrite.py" "$DIR/clients.lab.json" "$DIR/log/transcript.txt" "$OUT/transcript.txt"
python3 - "$DIR/clients.lab.json" "$OUT/clients.json" <<'PY'
import json, sys
cs = json.load(open(sys.argv[1]))
json.dump([{k: c[k] for k in ("ip", "lab_ip", "role", "did", "expect")} for c in cs],
          open(sys.argv[2], "w"), indent=2)
open(sys.argv[2], "a").write("\n")
PY

# Sanity: every kind of line the lab is for must be there.
missing=0
if [ "$SCENARIOS" = classes ]; then
    pats=('lost connection after CONNECT' 'lost connection after EHLO' 'Connection rate limit exceeded'
        'Connection concurrency limit exceeded' 'Message delivery request rate limit exceeded'
        'Recipient address rate limit exceeded' 'SSL_accept error from' 'lost connection after STARTTLS'
        'Client host rejected: Access denied' 'DENYLISTED' 'reject: header Subject:' 'reject: body '
        'SASL LOGIN authentication failed' 'sasl_username=carol@example.com' 'cannot find your hostname'
        'Greylisted, see' 'User unknown in virtual mailbox table' 'need fully-qualified address'
        'Multi-recipient bounce' 'vrfy=0/2' 'mail=0/1' 'Anonymous TLS connection established'
        'sasl_username=bob@example.com' 'status=sent' 'postfix/submission/smtpd')
else
    pats=('PREGREET ' 'COMMAND PIPELINING from' 'NON-SMTP COMMAND from' 'BARE NEWLINE from' \
    'improper command pipelining after' 'too many errors after' 'SASL LOGIN authentication failed' \
    'SASL PLAIN authentication failed' 'Relay access denied' 'PASS NEW ' 'PASS OLD ' \
    'DNSBL rank ' 'blocked using dnsbl.lab.example' 'User unknown in virtual mailbox table' \
    'Helo command rejected' 'Multi-recipient bounce' 'reject: VRFY from' 'non-SMTP command from' \
    'lost connection after RCPT' 'timeout after RCPT' 'status=sent' 'status=deferred' 'status=bounced' \
    'sasl_username=alice@example.com' 'Sender address rejected: Domain not found' \
    'does not resolve to address' 'postfix/submission/smtpd')
fi
for pat in "${pats[@]}"; do
    grep -qF -- "$pat" "$OUT/mail.log" || { echo "run.sh: no '$pat' line in $OUT/mail.log" >&2; missing=1; }
done
if grep -qE '(^|[^0-9.])127\.0\.0\.([3-9]|[1-9][0-9])([^0-9]|$)' "$OUT/mail.log"; then
    echo "run.sh: a lab client address was not rewritten" >&2; missing=1
fi
echo "run.sh: $(wc -l <"$OUT/mail.log") lines in $OUT/mail.log"
exit $missing
