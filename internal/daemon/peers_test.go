package daemon

import (
	"slices"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/control"
)

// Peers alone are something to do: a daemon with no logs and no guard
// runs when it follows a peer, shows the peer in status (here its primary
// is down), and a reload that changes peers: says it needs a restart.
func TestDaemonWithOnlyPeers(t *testing.T) {
	down := freeAddr(t) // nothing listens there any more
	peer := func(name string) string {
		return "peers:\n  - name: " + name + "\n    zone: bl.mx2.example.org\n    primary: " + down +
			"\n    tsig: {name: mx2-to-mx1, algorithm: hmac-sha256, secret: \"" + knotSecret + "\"}\n"
	}
	f := newConfigFile(t, peer("mx2"))
	cfg := f.load()
	cfg.Logs = nil
	td := startDaemonWith(t, cfg, Options{ConfigPath: f.path})
	var st Status
	waitFor(t, "the peer's first check", 5*time.Second, func() bool {
		st = Status{}
		return call(t, td.sock, control.Request{Cmd: control.CmdStatus}, &st) == nil && len(st.Peers) == 1 && st.Peers[0].Failures > 0
	}, td.logs)
	if p := st.Peers[0]; p.Name != "mx2" || p.HaveZone || p.LastError == "" {
		t.Fatalf("peer status %+v; want mx2 without a zone, with the error", p)
	}
	f.write(peer("mx9"))
	td.sighup(t)
	if keys := restartKeys(td.logs.String()); !slices.Contains(keys, "peers") {
		t.Fatalf("reload of a changed peers: named %v as needing a restart\n%s", keys, td.logs)
	}
}
