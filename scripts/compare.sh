#!/usr/bin/env bash
# compare.sh [LINES] - time mxguard side by side with the tools an admin would
# use otherwise, on one generated Postfix log (internal/loggen via cmd/mxgen).
#
#   scripts/compare.sh            # 1,000,000 lines
#   scripts/compare.sh 200000     # quicker
#
# Tools timed on the same file:
#   grep -c NOQUEUE            the floor: one pass, no parsing
#   pipeline                   grep -E 'reject: ' | sed (HELO) | sort | uniq -c | sort -rn
#   pflogsumm                  pflogsumm --problems-first FILE
#   fail2ban-regex             fail2ban-regex --raw FILE 'postfix[mode=aggressive]'
#                              (aggressive = the union of all modes: rejects, RBL,
#                              SASL failures, errors, DDoS lines; the default
#                              "more" mode matches fewer lines)
#   mxguard report             table to /dev/null, and --format json
#
# Environment:
#   SEED=1            generator seed              FORMAT=bsd    bsd|rfc3339|maillog
#   RUNS_FAST=3       runs of the fast tools (best is kept)
#   RUNS_SLOW=1       runs of pflogsumm and fail2ban-regex
#   TIMEOUT=1200      seconds allowed per run (timeout(1))
#   F2B_MODE=aggressive  fail2ban postfix filter mode
#   KEEP=1            keep the temp dir (log, outputs) and print its path
#   NO_INSTALL=1      never apt-get install missing tools; skip them instead
#   MXGUARD_PKG=./cmd/mxguard  package to build as mxguard (a missing one is skipped)
#
# Seconds are wall-clock, best of N; lines/s = LINES / seconds; "x mxguard" =
# seconds / seconds of "mxguard report" (table), so 10.0 means ten times
# slower than mxguard; peak RSS is GNU time's %M (largest process of a
# pipeline).
set -euo pipefail

LINES=${1:-1000000}
SEED=${SEED:-1}
FORMAT=${FORMAT:-bsd}
RUNS_FAST=${RUNS_FAST:-3}
RUNS_SLOW=${RUNS_SLOW:-1}
TIMEOUT=${TIMEOUT:-1200}
F2B_MODE=${F2B_MODE:-aggressive}

case $LINES in
'' | *[!0-9]*) echo "usage: $0 [LINES]   (LINES a positive integer, got '$LINES')" >&2; exit 2 ;;
esac
if [ "$LINES" -le 0 ]; then echo "usage: $0 [LINES]   (LINES must be positive)" >&2; exit 2; fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mxbench.XXXXXX")
if [ -n "${KEEP:-}" ]; then
	echo "keeping $TMP"
else
	trap 'rm -rf "$TMP"' EXIT
fi
LOG=$TMP/mail.log

log() { printf '%s\n' "$*" >&2; }

# ensure CMD PACKAGE: install PACKAGE with apt-get if CMD is missing.
APT_UPDATED=
ensure() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null 2>&1 && return 0
	if [ -n "${NO_INSTALL:-}" ] || ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
		log "skip: $cmd not found (install package $pkg)"
		return 1
	fi
	log "installing $pkg (for $cmd)"
	if [ -z "$APT_UPDATED" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2 || {
		log "skip: could not install $pkg"
		return 1
	}
	command -v "$cmd" >/dev/null 2>&1
}

ensure /usr/bin/time time || { log "GNU time is required"; exit 1; }
HAVE_PFLOGSUMM=; ensure pflogsumm pflogsumm && HAVE_PFLOGSUMM=1
HAVE_F2B=; ensure fail2ban-regex fail2ban && HAVE_F2B=1

# --- build and generate -------------------------------------------------
log "building mxgen"
(cd "$ROOT" && go build -o "$TMP/mxgen" ./cmd/mxgen)
HAVE_MXGUARD=
if (cd "$ROOT" && go build -o "$TMP/mxguard" "${MXGUARD_PKG:-./cmd/mxguard}") 2>"$TMP/build.err"; then
	HAVE_MXGUARD=1
else
	log "skip: mxguard does not build yet:"
	sed 's/^/    /' "$TMP/build.err" | head -5 >&2
fi

log "generating $LINES lines (seed $SEED, format $FORMAT)"
t0=$(date +%s%N)
"$TMP/mxgen" -lines "$LINES" -seed "$SEED" -format "$FORMAT" -stats >"$LOG" 2>"$TMP/gen.err"
t1=$(date +%s%N)
GEN_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/1e9}')
log "$(cat "$TMP/gen.err") [wall ${GEN_SECS}s]"
SIZE_MB=$(awk -v s="$(stat -c %s "$LOG")" 'BEGIN{printf "%.0f", s/1048576}')

# --- measuring ------------------------------------------------------------
# The commands never see log text as shell code: the file name is passed as
# an argument ($1) to fixed scripts.
cmd_grep() { grep -c NOQUEUE "$1"; }
cmd_pipeline() { grep -E 'reject: ' "$1" | sed -n 's/.*helo=<\([^>]*\)>.*/\1/p' | sort | uniq -c | sort -rn; }
cmd_pflogsumm() { pflogsumm --problems-first "$1"; }
cmd_f2b() { fail2ban-regex --raw --print-no-missed --print-no-ignored "$1" "postfix[mode=$F2B_MODE]"; }
cmd_mxguard_table() { "$TMP/mxguard" report "$1" >/dev/null && echo ok; }
cmd_mxguard_json() { "$TMP/mxguard" report --format json "$1"; }
export -f cmd_grep cmd_pipeline cmd_pflogsumm cmd_f2b cmd_mxguard_table cmd_mxguard_json
export TMP F2B_MODE

declare -A SECS RSS NOTE STATUS
ORDER=()

# measure NAME RUNS FUNC: best wall time of RUNS runs, peak RSS over the runs.
measure() {
	local name=$1 runs=$2 fn=$3 i rc best='' peak=0 t0 t1 s m
	ORDER+=("$name")
	log "timing $name ($runs run(s))"
	for ((i = 0; i < runs; i++)); do
		t0=$(date +%s%N)
		rc=0
		/usr/bin/time -f '%M' -o "$TMP/time.$name" \
			timeout --kill-after=10 "$TIMEOUT" bash -c "$fn \"\$1\"" _ "$LOG" \
			>"$TMP/out.$name" 2>"$TMP/err.$name" || rc=$?
		t1=$(date +%s%N)
		if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
			STATUS[$name]="timeout (${TIMEOUT}s)"
			return 0
		fi
		if [ "$rc" != 0 ] && ! { [ "$rc" = 1 ] && [ "$fn" = cmd_grep ]; }; then
			STATUS[$name]="failed (exit $rc): $(tail -n1 "$TMP/err.$name" | cut -c1-60)"
			return 0
		fi
		s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')
		m=$(tail -n1 "$TMP/time.$name")
		if [ -z "$best" ] || awk -v x="$s" -v y="$best" 'BEGIN{exit !(x<y)}'; then best=$s; fi
		if [ "$m" -gt "$peak" ]; then peak=$m; fi
	done
	SECS[$name]=$best
	RSS[$name]=$peak
	STATUS[$name]=ok
}

skip() { ORDER+=("$1"); STATUS[$1]="skipped: $2"; }

measure "grep -c NOQUEUE" "$RUNS_FAST" cmd_grep
NOTE["grep -c NOQUEUE"]="$(head -n1 "$TMP/out.grep -c NOQUEUE" 2>/dev/null) lines"
measure "grep|sed|sort pipeline" "$RUNS_FAST" cmd_pipeline
NOTE["grep|sed|sort pipeline"]="$(wc -l <"$TMP/out.grep|sed|sort pipeline" 2>/dev/null | tr -d ' ') HELO names"
if [ -n "$HAVE_PFLOGSUMM" ]; then
	measure "pflogsumm" "$RUNS_SLOW" cmd_pflogsumm
	NOTE[pflogsumm]="$(grep -m1 -E '^ +[0-9]+[km]? +rejected' "$TMP/out.pflogsumm" 2>/dev/null | awk '{print $1" rejected"}')"
else
	skip pflogsumm "not installed"
fi
if [ -n "$HAVE_F2B" ]; then
	measure "fail2ban-regex ($F2B_MODE)" "$RUNS_SLOW" cmd_f2b
	NOTE["fail2ban-regex ($F2B_MODE)"]="$(grep -m1 '^Lines:' "$TMP/out.fail2ban-regex ($F2B_MODE)" 2>/dev/null | sed -E 's/.* ([0-9]+) matched.*/\1 lines matched/')"
else
	skip "fail2ban-regex ($F2B_MODE)" "not installed"
fi
if [ -n "$HAVE_MXGUARD" ]; then
	measure "mxguard report" "$RUNS_FAST" cmd_mxguard_table
	measure "mxguard report --format json" "$RUNS_FAST" cmd_mxguard_json
	NOTE["mxguard report --format json"]="$(wc -c <"$TMP/out.mxguard report --format json" | tr -d ' ') bytes of JSON"
else
	skip "mxguard report" "cmd/mxguard does not build"
	skip "mxguard report --format json" "cmd/mxguard does not build"
fi

# --- table --------------------------------------------------------------------
BASE=${SECS["mxguard report"]:-}
echo
echo "mxguard benchmark: $LINES lines (${SIZE_MB} MiB, seed $SEED, format $FORMAT), generated in ${GEN_SECS}s"
echo "machine: $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')"
echo "versions: $(grep --version | head -n1); $(sed --version | head -n1)$( [ -n "$HAVE_PFLOGSUMM" ] && echo "; pflogsumm $(pflogsumm --version 2>&1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)")$( [ -n "$HAVE_F2B" ] && echo "; $(fail2ban-regex --version 2>&1 | head -n1)"); $(go version | cut -d' ' -f3)"
echo
printf '%-32s %10s %14s %11s %10s  %s\n' tool seconds lines/s "x mxguard" "peak RSS" note
printf '%-32s %10s %14s %11s %10s  %s\n' "--------------------------------" ---------- -------------- ----------- ---------- ----
for name in "${ORDER[@]}"; do
	if [ "${STATUS[$name]}" != ok ]; then
		printf '%-32s %10s %14s %11s %10s  %s\n' "$name" - - - - "${STATUS[$name]}"
		continue
	fi
	s=${SECS[$name]}
	rate=$(awk -v n="$LINES" -v s="$s" 'BEGIN{ if (s > 0) printf "%.0f", n/s; else print "inf" }')
	ratio=n/a
	if [ -n "$BASE" ]; then
		ratio=$(awk -v s="$s" -v b="$BASE" 'BEGIN{ if (b > 0) printf "%.2f", s/b; else print "n/a" }')
	fi
	rss=$(awk -v k="${RSS[$name]}" 'BEGIN{printf "%.1f MiB", k/1024}')
	printf '%-32s %10s %14s %11s %10s  %s\n' "$name" "$s" "$rate" "$ratio" "$rss" "${NOTE[$name]:-}"
done
