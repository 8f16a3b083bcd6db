#!/usr/bin/env bash
# setup.sh - install (if missing), configure and start a separate Postfix
# instance (plus Dovecot auth and a DNS stub) for the mxguard lab.
#
# usage: setup.sh [DIR]   (default /tmp/mxguard-postfix-lab; wiped and rebuilt)
# env:   LAB_SMTPD=127.0.0.1:2525 LAB_PSCREEN=127.0.0.1:2526
#        LAB_SUBMIT=127.0.0.1:2587 LAB_DNS=127.0.0.153
#        LAB_DEAD_PORT=2599 (next hop of partner.example: nothing listens)
#        LAB_REMOTE_PORT=2598 (next hop of corp.example: drive.py's fake MX)
#        LAB_SCENARIOS=default|classes: "classes" adds what drive.py
#        --scenarios classes needs (main-classes.cf.in, master-classes.cf.in:
#        TLS with a self-signed certificate, LAB_LIMITED=127.0.0.1:2527 with
#        low anvil limits, access maps, header/body checks, greylisting
#        through drive.py's policy server on LAB_POLICY_PORT=2597)
# Needs root. Re-runnable: a running instance in DIR is stopped first.
# The system Postfix (/etc/postfix) is neither changed nor started.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${1:-/tmp/mxguard-postfix-lab}
SMTPD=${LAB_SMTPD:-127.0.0.1:2525}
PSCREEN=${LAB_PSCREEN:-127.0.0.1:2526}
SUBMIT=${LAB_SUBMIT:-127.0.0.1:2587}
DNS=${LAB_DNS:-127.0.0.153}
SCENARIOS=${LAB_SCENARIOS:-default}
LIMITED=${LAB_LIMITED:-127.0.0.1:2527}
POLICY_PORT=${LAB_POLICY_PORT:-2597}
case "$SCENARIOS" in default|classes) ;; *) echo "setup.sh: LAB_SCENARIOS must be default or classes: $SCENARIOS" >&2; exit 2;; esac

[ "$(id -u)" = 0 ] || { echo "setup.sh: must run as root" >&2; exit 2; }
case "$DIR" in /*) ;; *) echo "setup.sh: DIR must be absolute: $DIR" >&2; exit 2;; esac

# --- packages -------------------------------------------------------------
need=()
command -v postfix >/dev/null || need+=(postfix)
command -v swaks >/dev/null || need+=(swaks)
command -v dovecot >/dev/null || need+=(dovecot-core)
command -v python3 >/dev/null || need+=(python3)
command -v ss >/dev/null || need+=(iproute2)
[ "$SCENARIOS" = default ] || command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Do not let the package configure the system's own mail server.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- clean slate ----------------------------------------------------------
"$HERE/stop.sh" "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,log,data,spool,vmail,dovecot/run,dovecot/state}
chmod 755 "$DIR" "$DIR/log"
chown postfix:postfix "$DIR/data"; chmod 700 "$DIR/data"

render() { # template -> file
    sed -e "s|@DIR@|$DIR|g" -e "s|@DNS@|$DNS|g" -e "s|@SMTPD@|$SMTPD|g" \
        -e "s|@PSCREEN@|$PSCREEN|g" -e "s|@SUBMIT@|$SUBMIT|g" \
        -e "s|@LIMITED@|$LIMITED|g" -e "s|@POLICY_PORT@|$POLICY_PORT|g" "$1" >"$2"
}
render "$HERE/main.cf.in" "$DIR/etc/main.cf"
render "$HERE/master.cf.in" "$DIR/etc/master.cf"
render "$HERE/dovecot.conf.in" "$DIR/dovecot/dovecot.conf"
cp "$HERE/zone.txt" "$DIR/etc/zone.txt"

cat >"$DIR/etc/helo_access" <<'HELO'
friend          REJECT You are not my friend
localhost       REJECT You are not localhost
mx.lab.example  REJECT You are not me
HELO
# one client the admin has already denylisted in postscreen (drive.py)
printf '127.0.0.54/32\treject\n' >"$DIR/etc/postscreen_access.cidr"
cat >"$DIR/etc/vmailbox" <<'MBOX'
alice@example.com       example.com/alice
bob@example.com         example.com/bob
carol@example.com       example.com/carol
postmaster@example.com  example.com/postmaster
MBOX
cat >"$DIR/etc/dovecot-users" <<'USERS'
alice@example.com:{PLAIN}lab-alice-secret
bob@example.com:{PLAIN}lab-bob-secret
USERS
chmod 640 "$DIR/etc/dovecot-users"
chown root:dovecot "$DIR/etc/dovecot-users"
cat >"$DIR/etc/transport" <<TRANSPORT
partner.example   smtp:[127.0.0.1]:${LAB_DEAD_PORT:-2599}
corp.example      smtp:[127.0.0.1]:${LAB_REMOTE_PORT:-2598}
TRANSPORT
postmap -c "$DIR/etc" "$DIR/etc/helo_access" "$DIR/etc/vmailbox" "$DIR/etc/transport"

# --- the "classes" scenario set (drive.py --scenarios classes) -------------
if [ "$SCENARIOS" = classes ]; then
    render "$HERE/master-classes.cf.in" "$DIR/etc/master-classes.cf"
    grep -v "^#" "$DIR/etc/master-classes.cf" >>"$DIR/etc/master.cf"
    render "$HERE/main-classes.cf.in" "$DIR/etc/main-classes.cf"
    settings=()
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue;; esac
        settings+=("$line")
    done <"$DIR/etc/main-classes.cf"
    postconf -c "$DIR/etc" -e "${settings[@]}"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mx.lab.example" \
        -keyout "$DIR/etc/lab-key.pem" -out "$DIR/etc/lab-cert.pem" 2>/dev/null
    chmod 600 "$DIR/etc/lab-key.pem"
    # the admin's decisions: one client rejected, one MTA must have reverse
    # DNS, one more client denylisted in postscreen
    printf '127.0.0.75/32\tREJECT\n127.0.0.64/32\tlab_rdns\n' >"$DIR/etc/client_access.cidr"
    printf '127.0.0.76/32\treject\n' >>"$DIR/etc/postscreen_access.cidr"
    printf '/^Subject:.*cheap pills/ REJECT Message content rejected\n' >"$DIR/etc/header_checks"
    printf '/casino bonus/ REJECT Message content rejected\n' >"$DIR/etc/body_checks"
    printf 'carol@example.com:{PLAIN}lab-carol-secret\n' >>"$DIR/etc/dovecot-users"
fi
mkdir -p "$DIR/vmail/example.com"
chown -R 65534:65534 "$DIR/vmail"

# Files the chrooted daemons read; resolv.conf points at the DNS stub only.
mkdir -p "$DIR/spool/etc"
printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$DNS" >"$DIR/spool/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n' >"$DIR/spool/etc/hosts"
printf 'hosts: files dns\nservices: files\n' >"$DIR/spool/etc/nsswitch.conf"
for f in services host.conf localtime; do
    [ -e "/etc/$f" ] && cp -L "/etc/$f" "$DIR/spool/etc/$f"
done

# Start a daemon in its own session with no inherited descriptors but
# stdout/stderr to a log file (a caller's pipe must not be held open).
# With --wait, wait for the starter (postfix start, dovecot fork themselves).
spawn() {
    local wait=0; [ "$1" = --wait ] && { wait=1; shift; }
    local log=$1; shift
    python3 - "$wait" "$log" "$@" <<'PY'
import subprocess, sys
wait, log, argv = sys.argv[1] == "1", sys.argv[2], sys.argv[3:]
with open(log, "ab") as out:
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                         close_fds=True, start_new_session=True)
sys.exit(p.wait() if wait else 0)
PY
}

# --- DNS stub -------------------------------------------------------------
spawn "$DIR/log/dnsstub.log" python3 "$HERE/dnsstub.py" "$DIR/etc/zone.txt" "$DNS" 53 "$DIR/dnsstub.pid"
for _ in $(seq 50); do [ -s "$DIR/dnsstub.pid" ] && break; sleep 0.1; done
[ -s "$DIR/dnsstub.pid" ] || { echo "setup.sh: DNS stub did not start" >&2; cat "$DIR/log/dnsstub.log" >&2; exit 1; }

# --- Postfix (creates the queue directories, private/ included) -----------
spawn --wait "$DIR/log/start.log" postfix -c "$DIR/etc" start ||
    { echo "setup.sh: postfix start failed:" >&2; tail -5 "$DIR/log/mail.log" >&2; exit 1; }

# --- Dovecot auth (its socket goes into the Postfix queue's private/) ----
spawn --wait "$DIR/log/start.log" dovecot -c "$DIR/dovecot/dovecot.conf" ||
    { echo "setup.sh: dovecot failed:" >&2; cat "$DIR/log/start.log" >&2; exit 1; }

# --- wait for the listeners (ss, not a test connection: that would be logged)
listeners=("$SMTPD" "$PSCREEN" "$SUBMIT")
[ "$SCENARIOS" = default ] || listeners+=("$LIMITED")
for hp in "${listeners[@]}"; do
    ok=
    for _ in $(seq 100); do
        if ss -Hltn "sport = :${hp##*:}" | grep -qF "$hp"; then ok=1; break; fi
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "setup.sh: nothing listens on $hp" >&2; exit 1; }
done
for _ in $(seq 50); do [ -S "$DIR/spool/private/auth" ] && break; sleep 0.1; done
[ -S "$DIR/spool/private/auth" ] || { echo "setup.sh: no Dovecot auth socket" >&2; exit 1; }
echo "setup.sh: lab Postfix $(postconf -c "$DIR/etc" -h mail_version) up in $DIR (smtpd $SMTPD, postscreen $PSCREEN, submission $SUBMIT, dns $DNS, scenarios $SCENARIOS)"
