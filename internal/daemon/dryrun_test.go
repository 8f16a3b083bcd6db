package daemon

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// --dry-run prints the exact firewall rules and map lines a real run would
// apply, and writes neither the map nor the block list.
func TestDaemonDryRunPrintsRules(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.DryRun = true
	cfg.Actions.IPTables.Enabled = true
	cfg.Actions.PostfixAccess.Enabled = true
	cfg.Actions.PostfixAccess.Path = filepath.Join(t.TempDir(), "mxguard_access")
	td := startDaemon(t, cfg, "")
	var lines []string
	for i := 1; i <= 5; i++ {
		lines = append(lines, dictLine("203.0.113.77", i))
	}
	appendLines(t, td.log, lines...)
	for _, want := range []string{
		`msg="would ban" ip=203.0.113.77/32 detector=dictionary`,
		"iptables -t filter -A MXGUARD -s 203.0.113.77/32 -j DROP",
		"203.0.113.77\tREJECT mxguard: 5 unknown recipients",
		"postmap hash:" + cfg.Actions.PostfixAccess.Path,
	} {
		waitFor(t, want, 5*time.Second, func() bool { return strings.Contains(td.logs.String(), want) }, td.logs)
	}
	if bans := list(t, td.sock); len(bans) != 1 || !bans[0].DryRun {
		t.Errorf("list in dry-run: %+v", bans)
	}
	td.stop(t)
	if m, _ := filepath.Glob(cfg.Actions.PostfixAccess.Path + "*"); len(m) > 0 {
		t.Errorf("dry-run wrote %v", m)
	}
}
