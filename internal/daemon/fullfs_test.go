package daemon

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/fullfs"
)

// The daemon on a full state_dir: attackers are banned at once (list,
// status), the store failure is in status and the metrics and logged once,
// not per decision, and after space comes back the bans are written and
// survive a restart.
func TestDaemonFullStateDir(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.StateDir = fullfs.Mount(t, 2<<20)
	cfg.MetricsListen = "127.0.0.1:0"
	td := startDaemon(t, cfg, "")
	free := fullfs.Fill(t, cfg.StateDir)

	const attackers = 20
	ip := func(i int) string { return fmt.Sprintf("198.51.100.%d", i+1) }
	var lines []string
	for i := range attackers {
		for n := range 5 {
			lines = append(lines, dictLine(ip(i), n))
		}
	}
	appendLines(t, td.log, lines...)
	waitFor(t, "every attacker in `list`", 10*time.Second, func() bool { return len(list(t, td.sock)) == attackers }, td.logs)

	st := statusOf(t, td.sock)
	ps := st.Manager.Persist
	if ps.Pending == 0 || ps.Failures == 0 || !strings.Contains(ps.LastError, "no space left on device") {
		t.Fatalf("status persist = %+v, want the queued bans and the error", ps)
	}
	if st.Pipeline.NotRecorded != 0 || st.Pipeline.HeldPaths != 0 {
		t.Errorf("pipeline %+v: a queued decision counts as recorded", st.Pipeline)
	}
	resp, err := http.Get("http://" + td.d.met.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("mxguard_ban_persist_pending %d", ps.Pending); !strings.Contains(string(body), want) {
		t.Errorf("metrics lack %q", want)
	}
	if n := strings.Count(td.logs.String(), "ban store refused a write"); n != 1 {
		t.Errorf("%d log lines for %d refused writes, want 1", n, ps.Failures)
	}

	free()
	waitFor(t, "the queued bans written", 20*time.Second, func() bool {
		return statusOf(t, td.sock).Manager.Persist.Pending == 0
	}, td.logs)
	td.stop(t)
	td = startDaemon(t, cfg, "")
	if got := len(list(t, td.sock)); got != attackers {
		t.Errorf("after a restart %d bans, want %d", got, attackers)
	}
}
