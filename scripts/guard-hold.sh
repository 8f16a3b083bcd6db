#!/usr/bin/env bash
# guard-hold.sh [N] - hold N clients (default 10000) in the greet pause of a
# real `mxguard guard` on loopback and print its RSS. The clients run in a
# separate process, so each side needs only N file descriptors.
set -euo pipefail
N=${1:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d)
trap 'kill "$GPID" 2>/dev/null || true; rm -rf "$T"' EXIT
ulimit -n $((N + 1000))
(cd "$ROOT" && go build -o "$T/mxguard" ./cmd/mxguard)
cat > "$T/hold.go" <<'GO'
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	var conns []net.Conn
	start := time.Now()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", os.Args[1], 5*time.Second)
		if err != nil {
			fmt.Println("dial", i, err)
			break
		}
		conns = append(conns, c)
	}
	fmt.Printf("clients held: %d (connected in %s)\n", len(conns), time.Since(start).Round(time.Millisecond))
	time.Sleep(5 * time.Second)
}
GO
(cd "$T" && printf 'module hold\ngo 1.26\n' > go.mod && go build -o hold .)
cat > "$T/hold.yaml" <<YAML
logs: []
state_dir: $T/state
control_socket: $T/control.sock
log_level: warn
guard:
  hostname: mx.hold.example
  greet_pause: 60s
  limits: {max_connections: $((N + 100)), max_connections_per_client: $((N + 100)), connection_rate: 0}
YAML
"$T/mxguard" guard --config "$T/hold.yaml" --listen 127.0.0.1:12600 --upstream 127.0.0.1:12601 2>"$T/guard.log" &
GPID=$!
sleep 1
echo "guard RSS before: $(awk '/VmRSS/ {print $2, $3}' /proc/$GPID/status)"
"$T/hold" 127.0.0.1:12600 "$N" &
sleep 4
echo "guard RSS with the clients held: $(awk '/VmRSS/ {print $2, $3}' /proc/$GPID/status), threads $(awk '/Threads/ {print $2}' /proc/$GPID/status)"
wait %2 2>/dev/null || true
