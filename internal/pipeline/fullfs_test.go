package pipeline

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/fullfs"
	"github.com/mxguard/mxguard/internal/tailer"
)

// firewallFake is an Action that records the prefixes applied to it.
type firewallFake struct {
	mu      sync.Mutex
	applied map[netip.Prefix]bool
}

func (f *firewallFake) Name() string { return "firewall" }
func (f *firewallFake) Apply(_ context.Context, b ban.Ban) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied[b.Prefix] = true
	return nil
}
func (f *firewallFake) Revoke(context.Context, netip.Prefix) error { return nil }
func (f *firewallFake) Sync(context.Context, []ban.Ban) error      { return nil }
func (f *firewallFake) Close() error                               { return nil }

func (f *firewallFake) has(p netip.Prefix) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[p]
}

// daemonPath is the daemon's log path: tailer (checkpoints in the block
// list file) → Follow → detectors → Manager over the bbolt store.
type daemonPath struct {
	st     *store.Store
	cp     *tailer.BoltCheckpoints
	m      *ban.Manager
	fw     *firewallFake
	p      *Pipeline
	f      *tailer.Follower
	cancel context.CancelFunc
	done   chan error
}

func startDaemonPath(t *testing.T, dbPath, logPath string, queueMax int) *daemonPath {
	t.Helper()
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemonPath{st: st, fw: &firewallFake{applied: map[netip.Prefix]bool{}}, done: make(chan error, 1)}
	d.m, err = ban.NewManager(ban.ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){},
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, PersistQueueMax: queueMax},
		st, []ban.Action{d.fw}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := detectors.DefaultConfig()
	cfg.ErrorBurst.Enabled, cfg.PrefixEscalation.Enabled = false, false // dictionary alone
	det, err := detectors.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.p = New(det, d.m, nil)
	if d.cp, err = tailer.NewBoltCheckpoints(st.DB()); err != nil {
		t.Fatal(err)
	}
	d.f, err = tailer.New(tailer.Config{Paths: []string{logPath}, FromStart: true,
		CheckpointEvery: 10 * time.Millisecond}, d.cp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- d.p.Follow(ctx, d.f, time.Local) }()
	return d
}

// stop stops as the daemon does; the final checkpoint may fail on a full
// disk, which is what the test is about.
func (d *daemonPath) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	<-d.done
	if err := d.m.Close(); err != nil {
		t.Error(err)
	}
	if err := d.st.Close(); err != nil {
		t.Error(err)
	}
}

func (d *daemonPath) waitLines(t *testing.T, n uint64) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d lines handled", n), func() bool { return d.p.Stats().Lines >= n })
}

func (d *daemonPath) checkpoint(t *testing.T, logPath string) int64 {
	t.Helper()
	pos, _, err := d.cp.LoadPosition(logPath)
	if err != nil {
		t.Fatal(err)
	}
	return pos.Offset
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// attackLog appends lines to the log and returns the offset just after
// each of them.
type attackLog struct {
	path string
	size int64
}

func (l *attackLog) append(t *testing.T, lines []string) []int64 {
	t.Helper()
	f, err := os.OpenFile(l.path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ends := make([]int64, len(lines))
	for i, s := range lines {
		l.size += int64(len(s)) + 1
		ends[i] = l.size
	}
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	return ends
}

func attacker(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/32", i+1)) }

// rcptLine is an unknown-recipient reject from a, stamped now.
func rcptLine(a netip.Prefix, n int) string {
	return fmt.Sprintf("%s mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <u%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<u%d@example.com> proto=ESMTP helo=<friend>",
		time.Now().Format(time.Stamp), a.Addr(), n, n)
}

// With state_dir on a full file system no decision is lost: queued ones
// reach the firewall at once and the store once space comes back; those
// the full queue refused hold the log checkpoint and are decided again
// when the attackers come back. After a restart every ban is there.
func TestFullStateDirKeepsDecisions(t *testing.T) {
	const attackers = 200
	tests := []struct {
		name     string
		queueMax int
	}{
		{name: "queued", queueMax: 0}, // default: room for all
		{name: "queue full", queueMax: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stateDir := fullfs.Mount(t, 2<<20)
			dbPath := filepath.Join(stateDir, "mxguard.db")
			log := &attackLog{path: filepath.Join(t.TempDir(), "mail.log")}
			log.append(t, []string{"Nov 25 10:49:00 mx1 postfix/qmgr[1]: 4BBB1A5: removed"})
			d := startDaemonPath(t, dbPath, log.path, tt.queueMax)
			d.waitLines(t, 1)
			free := fullfs.Fill(t, stateDir)

			var lines []string
			for i := range attackers {
				for n := range 5 {
					lines = append(lines, rcptLine(attacker(i), n))
				}
			}
			ends := log.append(t, lines)
			d.waitLines(t, 1+uint64(len(lines)))
			if err := d.m.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}

			// What the Manager took (stored or queued) is banned and in
			// the firewall now, with the disk still full.
			firstLost := -1
			for i := range attackers {
				_, banned := d.m.Banned(attacker(i).Addr())
				if banned != d.fw.has(attacker(i)) {
					t.Fatalf("%s: banned %v, in the firewall %v", attacker(i), banned, d.fw.has(attacker(i)))
				}
				if !banned && firstLost < 0 {
					firstLost = i
				}
			}
			ms, _ := d.m.Status()
			t.Logf("disk full: %d queued, %d store failures (%s), %d dropped; first lost %d",
				ms.Persist.Pending, ms.Persist.Failures, ms.Persist.LastError, ms.Persist.Dropped, firstLost)
			if ms.Persist.Failures == 0 || !strings.Contains(ms.Persist.LastError, "no space left") {
				t.Fatalf("the store never refused a write: %+v", ms.Persist)
			}
			held := int64(-1) // the acknowledged position may not pass this
			switch {
			case tt.queueMax == 0 && firstLost >= 0:
				t.Fatalf("%s lost with room in the queue", attacker(firstLost))
			case tt.queueMax > 0 && firstLost < 0:
				t.Fatal("every decision fitted in a queue of 50: the disk was not full")
			case tt.queueMax > 0:
				held = ends[firstLost*5+3] // the line before the lost decision's
				if got := d.f.Stats().Files[0].Acked; got > held {
					t.Fatalf("acknowledged up to %d, past the lost decision of %s at %d", got, attacker(firstLost), held)
				}
				if ps := d.p.Stats(); ps.HeldPaths != 1 || ps.NotRecorded == 0 {
					t.Errorf("pipeline stats %+v, want the checkpoint held", ps)
				}
			}

			free()
			waitUntil(t, "the queue to drain", func() bool { ms, _ := d.m.Status(); return ms.Persist.Pending == 0 })
			for i := range attackers {
				if _, ok, _ := d.st.Get(attacker(i)); ok != d.fw.has(attacker(i)) {
					t.Fatalf("%s: stored %v, in the firewall %v", attacker(i), ok, d.fw.has(attacker(i)))
				}
			}
			if held >= 0 {
				time.Sleep(50 * time.Millisecond) // checkpoints are saved again
				if got := d.checkpoint(t, log.path); got > held {
					t.Fatalf("checkpoint %d is past the lost decision at %d", got, held)
				}
				// The same attackers again: those lost are decided at their
				// next line.
				var again []string
				for i := range attackers {
					again = append(again, rcptLine(attacker(i), 5))
				}
				log.append(t, again)
				d.waitLines(t, 1+uint64(len(lines)+len(again)))
				d.m.Flush(context.Background())
			}
			for i := range attackers {
				if _, ok, _ := d.st.Get(attacker(i)); !ok || !d.fw.has(attacker(i)) {
					t.Fatalf("%s not banned after space came back", attacker(i))
				}
			}
			waitUntil(t, "the checkpoint at the end of the log", func() bool { return d.checkpoint(t, log.path) == log.size })
			d.stop(t)

			d = startDaemonPath(t, dbPath, log.path, tt.queueMax)
			defer d.stop(t)
			bans, _ := d.m.List(time.Now())
			if len(bans) != attackers {
				t.Errorf("after a restart %d bans, want %d", len(bans), attackers)
			}
		})
	}
}
