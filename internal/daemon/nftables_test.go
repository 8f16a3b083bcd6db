package daemon

import (
	"strings"
	"testing"
	"time"
)

// In dry-run the daemon prints the nftables transactions of a ban, and
// with Cleanup the deletion of its table at shutdown.
func TestNFTablesDryRunCleanup(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.DryRun = true
	cfg.Actions.NFTables.Enabled = true
	td := startDaemonWith(t, cfg, Options{Cleanup: true})
	var lines []string
	for i := range 5 {
		lines = append(lines, dictLine("203.0.113.77", i))
	}
	appendLines(t, td.log, lines...)
	const elem = "add element inet mxguard banned_v4 { 203.0.113.77 timeout "
	waitFor(t, elem, 5*time.Second, func() bool { return strings.Contains(td.logs.String(), elem) }, td.logs)
	td.stop(t)
	logs := td.logs.String()
	for _, want := range []string{"add table inet mxguard", "add chain inet mxguard input { type filter hook input priority -10; policy accept; }", "delete table inet mxguard"} {
		if !strings.Contains(logs, want) {
			t.Errorf("%q not printed:\n%s", want, logs)
		}
	}
}
