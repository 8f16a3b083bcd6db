package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// slowSyncAction is an action whose Sync waits until release is closed
// (a restore of thousands of rules); it records its calls in order.
type slowSyncAction struct {
	release   chan struct{}
	syncing   chan struct{} // closed when the first Sync starts
	failFirst bool          // the first Sync fails (after waiting)

	once  sync.Once
	mu    sync.Mutex
	syncs int
	calls []string
}

func (a *slowSyncAction) Name() string { return "slow" }

func (a *slowSyncAction) Sync(ctx context.Context, active []ban.Ban) error {
	a.once.Do(func() { close(a.syncing) })
	select {
	case <-a.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.syncs++
	a.calls = append(a.calls, fmt.Sprintf("sync %d", len(active)))
	if a.failFirst && a.syncs == 1 {
		return errors.New("ipset restore: exit status 1")
	}
	return nil
}

func (a *slowSyncAction) Apply(_ context.Context, b ban.Ban) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "apply "+b.Prefix.String())
	return nil
}

func (a *slowSyncAction) Revoke(_ context.Context, p netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "revoke "+p.String())
	return nil
}

func (a *slowSyncAction) Close() error { return nil }

func (a *slowSyncAction) called() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// The restore of the active bans runs in the background: while an action's
// Sync is still busy the control socket answers (status shows the restore
// running), the log is read, and the bans decided meanwhile are applied
// after the Sync, none lost; status then shows the restore done, with the
// Sync's error if it failed.
func TestRestoreInBackground(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failFirst bool
		wantState string
		wantErr   string
	}{
		{"sync succeeds", false, RestoreDone, ""},
		{"sync fails", true, RestoreFailed, "sync slow: ipset restore: exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newTestConfig(t)
			// A ban left by the previous run, to be restored.
			if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
				t.Fatal(err)
			}
			st, err := store.Open(cfg.DBPath(), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			if err := st.Put(store.Record{Prefix: netip.MustParsePrefix("198.51.100.9/32"), Detector: "dictionary",
				Reason: "earlier", Evidence: 5, FirstSeen: now, LastSeen: now, Since: now, Until: now.Add(time.Hour), Offence: 1}); err != nil {
				t.Fatal(err)
			}
			st.Close()

			act := &slowSyncAction{release: make(chan struct{}), syncing: make(chan struct{}), failFirst: tc.failFirst}
			td := startDaemonWith(t, cfg, Options{extraActions: []ban.Action{act}})
			released := false
			defer func() {
				if !released {
					close(act.release)
				}
			}()
			select {
			case <-act.syncing:
			case <-time.After(5 * time.Second):
				t.Fatalf("the restore's sync did not start\n%s", td.logs)
			}

			s := statusOf(t, td.sock)
			if s.Restore.State != RestoreRunning || s.Restore.Started.IsZero() || s.Manager.ActiveBans != 1 {
				t.Errorf("status during the restore: %+v, %d active bans", s.Restore, s.Manager.ActiveBans)
			}
			// The follower reads and the Manager decides during the restore.
			const attacker = "203.0.113.45"
			var lines []string
			for i := range 5 {
				lines = append(lines, dictLine(attacker, i))
			}
			appendLines(t, td.log, lines...)
			waitFor(t, "the attacker banned during the restore", 5*time.Second, func() bool {
				return hasBan(list(t, td.sock), attacker)
			}, td.logs)
			var b ban.Ban
			if err := call(t, td.sock, control.Request{Cmd: control.CmdBan, IP: "203.0.113.46", For: "2h"}, &b); err != nil {
				t.Fatal(err)
			}
			if got := act.called(); len(got) != 0 {
				t.Errorf("calls before the sync finished: %q", got)
			}

			close(act.release)
			released = true
			waitFor(t, "both bans applied", 5*time.Second, func() bool {
				got := act.called()
				return slices.Contains(got, "apply 203.0.113.45/32") && slices.Contains(got, "apply 203.0.113.46/32")
			}, td.logs)
			if got := act.called(); got[0] != "sync 1" {
				t.Errorf("calls %q: want the restore's sync of the one old ban first", got)
			}
			waitFor(t, "the restore to finish", 5*time.Second, func() bool {
				return statusOf(t, td.sock).Restore.State != RestoreRunning
			}, td.logs)
			r := statusOf(t, td.sock).Restore
			if r.State != tc.wantState || r.Finished.Before(r.Started) || !strings.Contains(r.Error, tc.wantErr) || (tc.wantErr == "") != (r.Error == "") {
				t.Errorf("restore status %+v, want state %s, error %q", r, tc.wantState, tc.wantErr)
			}
		})
	}
}

// BenchmarkStartWithBans measures a start with 7,500 active bans and the
// iptables backend (as root, in a network namespace of its own, the chain
// not there yet as after a reboot): the time until the control socket
// answers and the time until the restore is done.
//
//	go test -run '^$' -bench StartWithBans -benchtime 3x ./internal/daemon/
func BenchmarkStartWithBans(b *testing.B) {
	netnstest.Require(b, "iptables", "ip6tables", "iptables-restore", "ip6tables-restore")
	const n = 7500
	var ready, restored time.Duration
	for range b.N {
		b.StopTimer()
		ns := netnstest.New(b)
		cfg := newTestConfig(b)
		cfg.LogLevel = "warn"
		cfg.Actions.IPTables.Enabled = true
		cfg.Actions.IPTables.IPTablesPath = netnstest.Wrapper(b, ns, "iptables")
		cfg.Actions.IPTables.IP6TablesPath = netnstest.Wrapper(b, ns, "ip6tables")
		cfg.Actions.IPTables.IPTablesRestorePath = netnstest.Wrapper(b, ns, "iptables-restore")
		cfg.Actions.IPTables.IP6TablesRestorePath = netnstest.Wrapper(b, ns, "ip6tables-restore")
		if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
			b.Fatal(err)
		}
		seedBans(b, cfg, n)
		b.StartTimer()
		start := time.Now()
		td := startDaemonWith(b, cfg, Options{Cleanup: true})
		statusOf(b, td.sock)
		ready += time.Since(start)
		waitFor(b, "the restore", time.Minute, func() bool {
			return statusOf(b, td.sock).Restore.State != RestoreRunning
		}, td.logs)
		restored += time.Since(start)
		b.StopTimer()
		if r := statusOf(b, td.sock).Restore; r.State != RestoreDone || r.Bans != n {
			b.Fatalf("restore %+v", r)
		}
		td.stop(b)
	}
	b.ReportMetric(float64(ready.Milliseconds())/float64(b.N), "ms-to-status")
	b.ReportMetric(float64(restored.Milliseconds())/float64(b.N), "ms-to-restored")
}
