package daemon

import (
	"crypto/sha256"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/store"
)

// --dry-run prints the exact firewall rules, map lines and sessions to
// close a real run would apply, and writes neither the map nor the block list.
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
		"kill_sessions: would close the TCP sessions from 203.0.113.77/32 to ports 25,465,587 (none open now)",
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

// A dry run over an existing block list leaves the file byte for byte as
// it was: no would-be ban, no read position, no schema migration reaches
// it, and no copy is left behind.
func TestDaemonDryRunLeavesBlockListUntouched(t *testing.T) {
	cfg := newTestConfig(t)
	s, err := store.Open(cfg.DBPath(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.Put(store.Record{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Detector: "manual",
		Reason: "test", Since: now, Until: now.Add(time.Hour), Offence: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sum := func() [32]byte {
		b, err := os.ReadFile(cfg.DBPath())
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	before := sum()
	temps, _ := filepath.Glob(filepath.Join(cfg.StateDir, "mxguard-copy-*"))

	cfg.DryRun = true
	td := startDaemon(t, cfg, "")
	var lines []string
	for i := 1; i <= 5; i++ {
		lines = append(lines, dictLine("203.0.113.78", i))
	}
	appendLines(t, td.log, lines...)
	waitFor(t, "the would-be ban", 5*time.Second, func() bool {
		return strings.Contains(td.logs.String(), `msg="would ban" ip=203.0.113.78/32`)
	}, td.logs)
	if bans := list(t, td.sock); len(bans) != 2 {
		t.Errorf("list in dry-run: want the real ban and the would-be one, got %+v", bans)
	}
	time.Sleep(300 * time.Millisecond) // a checkpoint interval (100ms) or more
	td.stop(t)
	if sum() != before {
		t.Error("the dry run changed the block list file")
	}
	if after, _ := filepath.Glob(filepath.Join(cfg.StateDir, "mxguard-copy-*")); len(after) != len(temps) {
		t.Errorf("copies left behind: %v (before: %v)", after, temps)
	}
}
