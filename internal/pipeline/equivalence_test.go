package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/loggen"
	"github.com/mxguard/mxguard/internal/tailer"
)

// logClock is the daemon-path Manager's clock in tests: the log time of
// the decision being decided, so that bans from an old log are not over
// the moment they are made.
type logClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *logClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// clockedDecider moves the clock to each decision's time, then decides.
type clockedDecider struct {
	m     *ban.Manager
	clock *logClock

	mu       sync.Mutex
	prefixes map[netip.Prefix]bool // every prefix the Manager banned
}

func (c *clockedDecider) Decide(ctx context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	c.clock.mu.Lock()
	c.clock.t = d.Time
	c.clock.mu.Unlock()
	b, ok, err := c.m.Decide(ctx, d)
	if ok {
		c.mu.Lock()
		c.prefixes[b.Prefix] = true
		c.mu.Unlock()
	}
	return b, ok, err
}

// equivBan is what must be the same both ways.
type equivBan struct {
	IP       netip.Prefix
	Detector string
	Since    time.Time
	Until    time.Time
	Offence  int
	Evidence int
}

func (b equivBan) String() string {
	return fmt.Sprintf("%s %s since %s until %s offence %d evidence %d", b.IP, b.Detector,
		b.Since.UTC().Format(time.RFC3339), b.Until.UTC().Format(time.RFC3339), b.Offence, b.Evidence)
}

func sortEquiv(bs []equivBan) {
	slices.SortFunc(bs, func(a, b equivBan) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return a.IP.Addr().Compare(b.IP.Addr())
	})
}

// daemonBans follows path with the tailer (a real file, from its start)
// through Follow into a Manager over a bbolt store, and returns every ban
// the store's ledger recorded, in its final state (after extensions).
func daemonBans(t *testing.T, path string, lines int) []equivBan {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "mxguard.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := &logClock{}
	m, err := ban.NewManager(ban.ManagerConfig{Ban: ban.DefaultConfig(), Now: clock.Now,
		AllowSources: []func() ([]netip.Prefix, error){}}, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	det, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dec := &clockedDecider{m: m, clock: clock, prefixes: map[netip.Prefix]bool{}}
	p := New(det, dec, nil)
	// Its Manager's clock is the log time, so the log is the clock here
	// too (a BSD-stamped log can lie up to a week ahead of the wall clock).
	p.SetClock(nil)
	f, err := tailer.New(tailer.Config{Paths: []string{path}, FromStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Follow(ctx, f, time.UTC) }()
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().Lines < uint64(lines) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the follower handled %d of %d lines", p.Stats().Lines, lines)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Lines; got != uint64(lines) {
		t.Fatalf("the follower handled %d lines, the file has %d", got, lines)
	}

	var out []equivBan
	for pr := range dec.prefixes {
		entries, err := st.Ledger(pr, 0) // newest first
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range entries {
			if e.Event != "ban" && e.Event != "extend" {
				continue
			}
			r := e.Record
			key := fmt.Sprint(r.Since.UnixNano(), r.Offence)
			if seen[key] { // an older state of a ban already taken
				continue
			}
			seen[key] = true
			out = append(out, equivBan{IP: r.Prefix, Detector: r.Detector, Since: r.Since, Until: r.Until,
				Offence: r.Offence, Evidence: r.Evidence})
		}
	}
	sortEquiv(out)
	return out
}

func replayBans(t *testing.T, path string) ([]equivBan, ReplayResult) {
	t.Helper()
	res, err := Replay(context.Background(), []string{path}, ReplayOptions{
		Detectors: detectors.DefaultConfig(), Ban: ban.DefaultConfig(), Loc: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	var out []equivBan
	for _, b := range res.Bans {
		out = append(out, equivBan{IP: b.IP, Detector: b.Detector, Since: b.Time, Until: b.Until,
			Offence: b.Offence, Evidence: b.Evidence})
	}
	sortEquiv(out)
	return out, res
}

// The daemon (tailer → Follow → Manager → bbolt) and replay make the same
// bans from the same log: the real-Postfix lab log and a generated log
// with repeat offenders (re-bans that escalate, and extensions).
func TestDaemonAndReplayBanAlike(t *testing.T) {
	lab, err := os.ReadFile(filepath.Join("..", "..", "testdata", "lab", "mail.log"))
	if err != nil {
		t.Fatal(err)
	}
	var gen bytes.Buffer
	if _, err := loggen.Generate(&gen, loggen.Config{Lines: 4000, Seed: 7, Format: loggen.FormatRFC3339,
		MeanGap: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		log          []byte
		wantRebans   bool
		wantExtended bool
	}{
		{"lab", lab, false, true},
		{"generated", gen.Bytes(), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Written now: both ways take the year of BSD stamps from now
			// (the tailer from the clock, replay from the file's mtime).
			path := filepath.Join(t.TempDir(), "mail.log")
			if err := os.WriteFile(path, tt.log, 0o600); err != nil {
				t.Fatal(err)
			}
			lines := bytes.Count(tt.log, []byte("\n"))
			want, res := replayBans(t, path)
			got := daemonBans(t, path, lines)
			if len(want) == 0 {
				t.Fatal("replay made no ban")
			}
			rebans, extended := 0, 0
			for _, b := range want {
				if b.Offence > 1 {
					rebans++
				}
			}
			for _, s := range res.Summary {
				extended += s.Extended
			}
			if tt.wantRebans && rebans == 0 || tt.wantExtended && extended == 0 {
				t.Errorf("the log does not exercise what it is for: %d re-bans, %d extensions", rebans, extended)
			}
			t.Logf("%d lines: %d bans, %d re-bans, %d extensions", lines, len(want), rebans, extended)
			for i := range max(len(got), len(want)) {
				var g, w string
				if i < len(got) {
					g = got[i].String()
				}
				if i < len(want) {
					w = want[i].String()
				}
				if g != w {
					t.Errorf("ban %d:\n daemon %s\n replay %s", i, g, w)
				}
			}
		})
	}
}
