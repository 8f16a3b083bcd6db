package ban

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
)

// managerFake is an Action that records calls. failApply makes the next N
// Apply calls fail; block makes Apply wait for ctx.
type managerFake struct {
	name string

	mu        sync.Mutex
	applied   []Ban
	revoked   []netip.Prefix
	synced    [][]Ban
	failApply int
	failSync  int
	block     bool
	closed    bool
}

func (f *managerFake) Name() string { return f.name }

func (f *managerFake) Apply(ctx context.Context, b Ban) error {
	f.mu.Lock()
	if f.block {
		f.mu.Unlock()
		<-ctx.Done()
		return ctx.Err()
	}
	defer f.mu.Unlock()
	if f.failApply > 0 {
		f.failApply--
		return errors.New("xtables lock held")
	}
	f.applied = append(f.applied, b)
	return nil
}

func (f *managerFake) Revoke(_ context.Context, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, p)
	return nil
}

func (f *managerFake) Sync(_ context.Context, active []Ban) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSync > 0 {
		f.failSync--
		return errors.New("ipset missing")
	}
	f.synced = append(f.synced, slices.Clone(active))
	return nil
}

func (f *managerFake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *managerFake) calls() (applied []Ban, revoked []netip.Prefix, synced [][]Ban) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied), slices.Clone(f.revoked), slices.Clone(f.synced)
}

type managerClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *managerClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *managerClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type managerEnv struct {
	m     *Manager
	store *store.Store
	clock *managerClock
	fakes []*managerFake
	logs  *bytes.Buffer
}

func managerNew(t *testing.T, cfg ManagerConfig, fakes ...*managerFake) *managerEnv {
	t.Helper()
	return managerNewSeeded(t, cfg, nil, fakes...)
}

// managerNewSeeded starts the Manager over a store that already holds
// seed (the state left by a previous run).
func managerNewSeeded(t *testing.T, cfg ManagerConfig, seed []store.Record, fakes ...*managerFake) *managerEnv {
	t.Helper()
	env := &managerEnv{store: openStore(t, ""), clock: &managerClock{t: t0}, fakes: fakes, logs: &bytes.Buffer{}}
	for _, r := range seed {
		if err := env.store.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Now = env.clock.Now
	if cfg.AllowSources == nil {
		cfg.AllowSources = []func() ([]netip.Prefix, error){}
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase = 5 * time.Millisecond
		cfg.RetryMax = 20 * time.Millisecond
	}
	var acts []Action
	for _, f := range fakes {
		acts = append(acts, f)
	}
	logger := slog.New(slog.NewJSONHandler(&managerSyncWriter{w: env.logs}, nil))
	m, err := NewManager(cfg, env.store, acts, logger)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	env.m = m
	return env
}

type managerSyncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *managerSyncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (e *managerEnv) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.m.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func managerDec(ip string, at time.Time) detectors.Decision {
	var p netip.Prefix
	if strings.Contains(ip, "/") {
		p = netip.MustParsePrefix(ip)
	} else {
		a := netip.MustParseAddr(ip)
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return detectors.Decision{Prefix: p, Detector: "dictionary", Reason: "5 unknown recipients in 10m0s",
		Evidence: 5, Time: at, Lines: []string{"NOQUEUE: reject: RCPT from unknown[" + ip + "]"}}
}

// managerWait polls cond for up to 5s.
func managerWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestBanConfigDuration(t *testing.T) {
	c := DefaultConfig()
	c.Max = Duration(10 * time.Hour)
	c3 := c
	c3.Factor = 3
	c1 := c
	c1.Factor = 1
	tests := []struct {
		cfg     Config
		offence int
		want    time.Duration
	}{
		{c, 0, time.Hour},
		{c, 1, time.Hour},
		{c, 2, 2 * time.Hour},
		{c, 3, 4 * time.Hour},
		{c, 4, 8 * time.Hour},
		{c, 5, 10 * time.Hour}, // capped
		{c, 500, 10 * time.Hour},
		{c3, 3, 9 * time.Hour},
		{c1, 7, time.Hour},
		{DefaultConfig(), 8, 128 * time.Hour},
		{DefaultConfig(), 9, 168 * time.Hour},
	}
	for _, tt := range tests {
		if got := tt.cfg.Duration(tt.offence); got != tt.want {
			t.Errorf("factor %v: Duration(%d) = %v, want %v", tt.cfg.Factor, tt.offence, got, tt.want)
		}
	}
}

func TestManagerEscalationAndForget(t *testing.T) {
	type step struct {
		after       time.Duration // since the previous decision
		wantOffence int
		wantDur     time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"escalate and cap", []step{
			{0, 1, time.Hour}, {2 * time.Hour, 2, 2 * time.Hour}, {3 * time.Hour, 3, 4 * time.Hour},
			{5 * time.Hour, 4, 8 * time.Hour}, {9 * time.Hour, 5, 10 * time.Hour}, {11 * time.Hour, 6, 10 * time.Hour},
		}},
		{"forget after 30 days", []step{
			{0, 1, time.Hour}, {2 * time.Hour, 2, 2 * time.Hour},
			// 31 days later both old offences are forgotten.
			{31 * 24 * time.Hour, 1, time.Hour},
			// 29 days after that: the one 29 days ago still counts.
			{29 * 24 * time.Hour, 2, 2 * time.Hour},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &managerFake{name: "fake"}
			cfg := ManagerConfig{Ban: Config{Max: Duration(10 * time.Hour)}}
			env := managerNew(t, cfg, f)
			at := t0
			for i, s := range tt.steps {
				at = at.Add(s.after)
				env.clock.Set(at)
				if _, err := env.m.Expire(context.Background(), at); err != nil {
					t.Fatal(err)
				}
				env.flush(t)
				b, ok, err := env.m.Decide(context.Background(), managerDec("203.0.113.7", at))
				if err != nil || !ok {
					t.Fatalf("step %d: Decide = %v %v", i, ok, err)
				}
				env.flush(t) // no coalescing of revoke+apply: count every call
				if b.Offence != s.wantOffence || b.Until.Sub(b.Since) != s.wantDur || !b.Since.Equal(at) {
					t.Errorf("step %d: offence %d for %v (since %v), want offence %d for %v",
						i, b.Offence, b.Until.Sub(b.Since), b.Since, s.wantOffence, s.wantDur)
				}
			}
			env.flush(t)
			applied, revoked, _ := f.calls()
			if len(applied) != len(tt.steps) || len(revoked) != len(tt.steps)-1 {
				t.Errorf("applied %d, revoked %d; want %d and %d", len(applied), len(revoked), len(tt.steps), len(tt.steps)-1)
			}
			h, _, _ := env.store.History(netip.MustParsePrefix("203.0.113.7/32"))
			if h.Offences != len(tt.steps) {
				t.Errorf("history offences = %d, want %d", h.Offences, len(tt.steps))
			}
		})
	}
}

func TestManagerDecideRefusals(t *testing.T) {
	tests := []struct {
		name    string
		dec     detectors.Decision
		wantOK  bool
		wantErr bool
		wantIP  string
	}{
		{"plain v4", managerDec("192.0.2.10", t0), true, false, "192.0.2.10/32"},
		{"plain v6", managerDec("2001:db8::10", t0), true, false, "2001:db8::10/128"},
		{"v4 /24 allowed", managerDec("192.0.2.0/24", t0), true, false, "192.0.2.0/24"},
		{"v6 /48 allowed", managerDec("2001:db8:5::/48", t0), true, false, "2001:db8:5::/48"},
		{"host bits masked", managerDec("192.0.4.99/24", t0), true, false, "192.0.4.0/24"},
		{"mapped v6 is unmapped", managerDec("::ffff:192.0.2.11", t0), true, false, "192.0.2.11/32"},
		{"loopback", managerDec("127.0.0.1", t0), false, false, ""},
		{"v6 loopback", managerDec("::1", t0), false, false, ""},
		{"mapped loopback", managerDec("::ffff:127.0.0.1", t0), false, false, ""},
		{"configured CIDR", managerDec("198.51.100.77", t0), false, false, ""},
		{"overlaps allowlisted address", managerDec("203.0.113.0/24", t0), false, false, ""},
		{"host address", managerDec("198.18.0.200", t0), false, false, ""},
		{"too broad v4", managerDec("192.0.0.0/16", t0), false, false, ""},
		{"too broad v6", managerDec("2001:db8::/32", t0), false, false, ""},
		{"invalid prefix", detectors.Decision{Detector: "x"}, false, true, ""},
	}
	f := &managerFake{name: "fake"}
	host := func() ([]netip.Prefix, error) { return []netip.Prefix{netip.MustParsePrefix("198.18.0.200/32")}, nil }
	env := managerNew(t, ManagerConfig{Allowlist: []string{"198.51.100.0/24", "203.0.113.5"},
		AllowSources: []func() ([]netip.Prefix, error){host}}, f)
	wantApplied := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, ok, err := env.m.Decide(context.Background(), tt.dec)
			if (err != nil) != tt.wantErr || ok != tt.wantOK {
				t.Fatalf("Decide = %v, %v; want ok=%v err=%v", ok, err, tt.wantOK, tt.wantErr)
			}
			if ok {
				wantApplied++
				if b.Prefix.String() != tt.wantIP {
					t.Errorf("banned %s, want %s", b.Prefix, tt.wantIP)
				}
			}
		})
	}
	env.flush(t)
	applied, _, _ := f.calls()
	if len(applied) != wantApplied {
		t.Errorf("action got %d bans, want %d: %v", len(applied), wantApplied, applied)
	}
	st, _ := env.m.Status()
	if d := st.Detectors["dictionary"]; d.Refused != 8 || d.Bans != uint64(wantApplied) {
		t.Errorf("detector stats = %+v", d)
	}
	if !strings.Contains(env.logs.String(), `"msg":"ban refused","ip":"127.0.0.1/32"`) {
		t.Errorf("refusal not logged:\n%s", env.logs)
	}
	// Manual bans report refusals as errors.
	if _, err := env.m.Ban(context.Background(), netip.MustParsePrefix("127.0.0.1/32"), 0, ""); !errors.Is(err, ErrAllowlisted) {
		t.Errorf("manual ban of loopback: %v", err)
	}
	if _, err := env.m.Ban(context.Background(), netip.MustParsePrefix("10.0.0.0/8"), 0, ""); !errors.Is(err, ErrPrefixTooBroad) {
		t.Errorf("manual ban of /8: %v", err)
	}
}

func TestManagerWarnMode(t *testing.T) {
	f := &managerFake{name: "fake"}
	env := managerNew(t, ManagerConfig{}, f)
	d := managerDec("192.0.2.1", t0)
	d.Warn = true
	if _, ok, err := env.m.Decide(context.Background(), d); ok || err != nil {
		t.Fatalf("warn decision: %v %v", ok, err)
	}
	env.flush(t)
	if a, _, _ := f.calls(); len(a) != 0 {
		t.Errorf("warn decision applied: %v", a)
	}
	if l, _ := env.m.List(t0); len(l) != 0 {
		t.Errorf("warn decision listed: %v", l)
	}
	if !strings.Contains(env.logs.String(), `"msg":"warn"`) {
		t.Errorf("warn not logged:\n%s", env.logs)
	}
}

func TestManagerDecisionLogLine(t *testing.T) {
	env := managerNew(t, ManagerConfig{}, &managerFake{name: "fake"})
	if _, _, err := env.m.Decide(context.Background(), managerDec("192.0.2.1", t0)); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	for l := range strings.Lines(env.logs.String()) {
		if strings.Contains(l, `"msg":"ban"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string]any{"msg": "ban", "ip": "192.0.2.1/32", "detector": "dictionary",
		"reason": "5 unknown recipients in 10m0s", "evidence": 5.0, "offence": 1.0,
		"until": "2026-03-01T13:00:00Z"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log attr %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
}

func TestManagerDryRun(t *testing.T) {
	f := &managerFake{name: "fake"}
	env := managerNew(t, ManagerConfig{DryRun: true}, f)
	ctx := context.Background()
	b, ok, err := env.m.Decide(ctx, managerDec("192.0.2.1", t0))
	if err != nil || !ok || !b.DryRun {
		t.Fatalf("dry-run Decide = %+v %v %v", b, ok, err)
	}
	// A would-be ban is listed, never enforced: the guard asks Banned.
	if _, banned := env.m.Banned(netip.MustParseAddr("192.0.2.1")); banned {
		t.Error("Banned reports a would-be ban of a dry run")
	}
	// Second offence after expiry escalates in memory too.
	env.clock.Set(t0.Add(2 * time.Hour))
	b2, _, _ := env.m.Decide(ctx, managerDec("192.0.2.1", t0.Add(2*time.Hour)))
	if b2.Offence != 2 || b2.Until.Sub(b2.Since) != 2*time.Hour {
		t.Errorf("dry-run escalation: %+v", b2)
	}
	if _, err := env.m.Ban(ctx, netip.MustParsePrefix("192.0.2.2/32"), time.Hour, "by hand"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.m.Unban(ctx, netip.MustParsePrefix("192.0.2.2/32")); err != nil {
		t.Fatal(err)
	}
	if err := env.m.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := env.m.Expire(ctx, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	env.flush(t)
	// The actions of a dry run are printers: they are shown every would-be
	// ban and unban, but never asked to Sync (restore) anything.
	a, r, s := f.calls()
	if len(s) != 0 {
		t.Errorf("dry-run synced the action: %v", s)
	}
	applied := map[string]bool{}
	for _, b := range a {
		if !b.DryRun {
			t.Errorf("dry-run applied a real ban %+v", b)
		}
		applied[b.Prefix.String()] = true
	}
	if !applied["192.0.2.1/32"] {
		t.Errorf("dry-run ban not shown to the action: applied %v", a)
	}
	if applied["192.0.2.2/32"] && !slices.Contains(r, netip.MustParsePrefix("192.0.2.2/32")) {
		t.Errorf("dry-run unban not shown to the action: revoked %v", r)
	}
	if recs, _ := env.store.Active(t0); len(recs) != 0 {
		t.Errorf("dry-run wrote to the store: %v", recs)
	}
	l, _ := env.m.List(env.clock.Now())
	if len(l) != 1 || !l[0].DryRun || l[0].Prefix.String() != "192.0.2.1/32" {
		t.Errorf("List in dry-run = %+v", l)
	}
	if !strings.Contains(env.logs.String(), `"msg":"would ban","ip":"192.0.2.1/32","detector":"dictionary"`) {
		t.Errorf("would-ban line missing:\n%s", env.logs)
	}
}

func TestManagerFailingActionRetried(t *testing.T) {
	good := &managerFake{name: "good"}
	flaky := &managerFake{name: "flaky", failApply: 3}
	stuck := &managerFake{name: "stuck", block: true} // hangs until the 1s ActionTimeout
	env := managerNew(t, ManagerConfig{ActionTimeout: time.Second, RetryBase: 20 * time.Millisecond,
		RetryMax: 40 * time.Millisecond}, stuck, flaky, good)
	start := time.Now()
	if _, ok, err := env.m.Decide(context.Background(), managerDec("192.0.2.1", t0)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Decide waited for the actions (%v)", d)
	}
	managerWait(t, "good action applied", func() bool { a, _, _ := good.calls(); return len(a) == 1 })
	managerWait(t, "flaky action applied after retries", func() bool { a, _, _ := flaky.calls(); return len(a) == 1 })
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("good and flaky actions were held up by the stuck one for %v", d)
	}
	status := func(name string) ActionStatus {
		st, err := env.m.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range st.Actions {
			if a.Name == name {
				return a
			}
		}
		t.Fatalf("no status for %s", name)
		return ActionStatus{}
	}
	if s := status("stuck"); s.Pending != 1 {
		t.Errorf("stuck status while hanging = %+v", s)
	}
	managerWait(t, "flaky retry queue empty", func() bool { s := status("flaky"); return s.Pending == 0 })
	if s := status("flaky"); s.Failures != 3 || s.Applied != 1 || !strings.Contains(s.LastError, "apply 192.0.2.1/32: xtables lock held") {
		t.Errorf("flaky status = %+v", s)
	}
	if s := status("good"); s.Pending != 0 || s.LastError != "" || s.Applied != 1 || s.Failures != 0 {
		t.Errorf("good status = %+v", s)
	}
	managerWait(t, "stuck action timed out and queued for retry", func() bool { return status("stuck").Retrying == 1 })
	if s := status("stuck"); !strings.Contains(s.LastError, "deadline exceeded") {
		t.Errorf("stuck status = %+v", s)
	}
	if a, _, _ := good.calls(); len(a) != 1 {
		t.Errorf("good action applied %d times", len(a))
	}
}

func TestManagerOldDecisionNotApplied(t *testing.T) {
	f := &managerFake{name: "fake"}
	env := managerNew(t, ManagerConfig{}, f)
	env.clock.Set(t0.Add(3 * time.Hour))
	b, ok, err := env.m.Decide(context.Background(), managerDec("192.0.2.1", t0))
	if err != nil || !ok || !b.Until.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Decide = %+v %v %v", b, ok, err)
	}
	env.flush(t)
	if a, _, _ := f.calls(); len(a) != 0 {
		t.Errorf("a ban over before it was decided was applied: %v", a)
	}
	if h, _, _ := env.store.History(b.Prefix); h.Offences != 1 {
		t.Errorf("the offence was not recorded: %+v", h)
	}
}

func TestManagerExtendNoDoubleApply(t *testing.T) {
	f := &managerFake{name: "fake"}
	env := managerNew(t, ManagerConfig{}, f)
	ctx := context.Background()
	b1, _, _ := env.m.Decide(ctx, managerDec("192.0.2.1", t0))
	d := managerDec("192.0.2.1", t0)
	d.Lines = []string{"a", "b", "c", "d", "e"}
	b2, ok, err := env.m.Decide(ctx, d)
	if err != nil || !ok || !b2.Until.Equal(b1.Until) || b2.Offence != 1 || b2.Evidence != 10 {
		t.Fatalf("second decision = %+v %v %v", b2, ok, err)
	}
	env.flush(t)
	if a, _, _ := f.calls(); len(a) != 1 {
		t.Errorf("applied %d times, want 1", len(a))
	}
	// Later evidence extends until (same offence) and lets timed backends follow.
	env.clock.Set(t0.Add(30 * time.Minute))
	b3, _, _ := env.m.Decide(ctx, managerDec("192.0.2.1", t0.Add(30*time.Minute)))
	if !b3.Until.Equal(t0.Add(90*time.Minute)) || b3.Offence != 1 || !b3.Since.Equal(t0) {
		t.Errorf("extension = %+v", b3)
	}
	h, _, _ := env.store.History(b1.Prefix)
	if h.Offences != 1 {
		t.Errorf("extensions counted as offences: %+v", h)
	}
	ex, err := env.m.Explain(b1.Prefix)
	if err != nil || !ex.Banned || ex.Record == nil || len(ex.Record.Lines) != 5 || ex.Record.Lines[4] != "NOQUEUE: reject: RCPT from unknown[192.0.2.1]" {
		t.Errorf("Explain = %+v %v", ex, err)
	}
	if len(ex.Ledger) != 3 || ex.Ledger[2].Event != "ban" || ex.History == nil || ex.History.Offences != 1 {
		t.Errorf("Explain ledger/history = %+v %+v", ex.Ledger, ex.History)
	}
	st, _ := env.m.Status()
	if d := st.Detectors["dictionary"]; d.Decisions != 3 || d.Bans != 1 || d.Extended != 2 {
		t.Errorf("stats = %+v", d)
	}
}

func TestManagerExpiryRevokes(t *testing.T) {
	f1, f2 := &managerFake{name: "a"}, &managerFake{name: "b"}
	env := managerNew(t, ManagerConfig{}, f1, f2)
	ctx := context.Background()
	env.m.Decide(ctx, managerDec("192.0.2.1", t0))
	env.m.Ban(ctx, netip.MustParsePrefix("192.0.2.2/32"), 5*time.Hour, "by hand")
	n, err := env.m.Expire(ctx, t0.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Expire = %d %v", n, err)
	}
	env.flush(t)
	for _, f := range []*managerFake{f1, f2} {
		_, r, _ := f.calls()
		if len(r) != 1 || r[0].String() != "192.0.2.1/32" {
			t.Errorf("%s revoked %v", f.name, r)
		}
	}
	if _, ok, _ := env.store.Get(netip.MustParsePrefix("192.0.2.1/32")); ok {
		t.Error("expired ban still stored")
	}
	if h, ok, _ := env.store.History(netip.MustParsePrefix("192.0.2.1/32")); !ok || h.Offences != 1 {
		t.Errorf("history lost at expiry: %+v", h)
	}
	l, _ := env.m.List(t0.Add(time.Hour))
	if len(l) != 1 || l[0].Detector != "manual" || !l[0].Until.Equal(t0.Add(5*time.Hour)) {
		t.Errorf("List = %+v", l)
	}
	if found, err := env.m.Unban(ctx, netip.MustParsePrefix("192.0.2.2/32")); !found || err != nil {
		t.Errorf("Unban = %v %v", found, err)
	}
	env.flush(t)
	if _, r, _ := f1.calls(); len(r) != 2 {
		t.Errorf("unban not revoked: %v", r)
	}
	if l, _ := env.m.List(t0); len(l) != 0 {
		t.Errorf("List after unban = %v", l)
	}
}

func TestManagerRestoreSyncsActive(t *testing.T) {
	f1, f2 := &managerFake{name: "a"}, &managerFake{name: "b", failSync: 1}
	// State left by a previous run: two active, one expired.
	env := managerNewSeeded(t, ManagerConfig{}, []store.Record{
		rec("192.0.2.1/32", t0.Add(-time.Hour), 3*time.Hour),
		rec("2001:db8::/64", t0.Add(-time.Hour), 2*time.Hour),
		rec("192.0.2.3/32", t0.Add(-2*time.Hour), time.Hour),
	}, f1, f2)
	err := env.m.Restore(context.Background())
	if err == nil || !strings.Contains(err.Error(), "sync b: ipset missing") {
		t.Errorf("Restore error = %v, want the failing sync of b", err)
	}
	_, r1, s1 := f1.calls()
	want := "2001:db8::/64,192.0.2.1/32"
	got := func(bs []Ban) string {
		var s []string
		for _, b := range bs {
			s = append(s, b.Prefix.String())
		}
		return strings.Join(s, ",")
	}
	if len(s1) != 1 || got(s1[0]) != want {
		t.Errorf("a synced %v, want once with %s", s1, want)
	}
	if len(r1) != 1 || r1[0].String() != "192.0.2.3/32" {
		t.Errorf("expired ban not revoked at restore: %v", r1)
	}
	managerWait(t, "b's sync retried", func() bool { _, _, s := f2.calls(); return len(s) == 1 })
	if _, _, s2 := f2.calls(); got(s2[0]) != want {
		t.Errorf("b synced %v", s2)
	}
	managerWait(t, "b healthy", func() bool {
		st, _ := env.m.Status()
		return !st.Actions[1].SyncPending
	})
	st, _ := env.m.Status()
	if st.ActiveBans != 2 {
		t.Errorf("Status.ActiveBans = %d", st.ActiveBans)
	}
	// Idempotent: a second restore syncs the same set again.
	if err := env.m.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, s := f1.calls(); len(s) != 2 || got(s[1]) != want {
		t.Errorf("second restore synced %v", s)
	}
}

func TestManagerPersistsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mxguard.db")
	clock := &managerClock{t: t0}
	cfg := ManagerConfig{Now: clock.Now, AllowSources: []func() ([]netip.Prefix, error){}}
	start := func() (*store.Store, *Manager, *managerFake) {
		s, err := store.Open(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		f := &managerFake{name: "fake"}
		m, err := NewManager(cfg, s, []Action{f}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s, m, f
	}
	s, m, f := start()
	ctx := context.Background()
	m.Decide(ctx, managerDec("192.0.2.1", t0))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !f.closed {
		t.Error("Close did not close the action")
	}
	s.Close()

	clock.Set(t0.Add(30 * time.Minute))
	s, m, f = start()
	defer s.Close()
	defer m.Close()
	if err := m.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, syn := f.calls(); len(syn) != 1 || len(syn[0]) != 1 || syn[0][0].Prefix.String() != "192.0.2.1/32" {
		t.Errorf("restore after restart synced %v", syn)
	}
	// Escalation survives the restart and the expiry.
	clock.Set(t0.Add(2 * time.Hour))
	m.Expire(ctx, clock.Now())
	b, _, _ := m.Decide(ctx, managerDec("192.0.2.1", clock.Now()))
	if b.Offence != 2 {
		t.Errorf("offence after restart = %d, want 2", b.Offence)
	}
}

func TestManagerRun(t *testing.T) {
	f := &managerFake{name: "fake"}
	env := managerNew(t, ManagerConfig{SweepInterval: 5 * time.Millisecond}, f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- env.m.Run(ctx) }()
	env.m.Decide(context.Background(), managerDec("192.0.2.1", t0))
	env.clock.Set(t0.Add(2 * time.Hour))
	managerWait(t, "Run to expire the ban", func() bool { _, r, _ := f.calls(); return len(r) == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBanConfigYAML(t *testing.T) {
	tests := []struct {
		name, in string
		want     Config
		wantErr  string
	}{
		{"full", "ban: {base: 30m, factor: 3, max: 48h, forget_after: 240h, max_prefix_v4: 32, max_prefix_v6: 64}\n",
			Config{Base: Duration(30 * time.Minute), Factor: 3, Max: Duration(48 * time.Hour),
				ForgetAfter: Duration(240 * time.Hour), LedgerRetention: Duration(2160 * time.Hour),
				MaxPrefixV4: 32, MaxPrefixV6: 64}, ""},
		{"defaults", "ban: {}\n", DefaultConfig(), ""},
		{"bad duration", "ban: {base: 1x}\n", Config{}, `invalid duration "1x"`},
		{"no unit", "ban: {base: 3600}\n", Config{}, `invalid duration "3600"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c struct {
				Ban Config `yaml:"ban"`
			}
			err := yaml.Unmarshal([]byte(tt.in), &c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Ban.WithDefaults(); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	bad := Config{Base: Duration(time.Hour), Factor: 0.5, Max: Duration(time.Minute), MaxPrefixV4: 40, MaxPrefixV6: 48}
	err := bad.Validate()
	for _, want := range []string{"ban.factor", "ban.max", "ban.max_prefix_v4"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %v does not mention %s", err, want)
		}
	}
	if _, err := NewManager(ManagerConfig{Ban: bad}, openStore(t, ""), nil, nil); err == nil {
		t.Error("NewManager accepted a bad config")
	}
}

func TestManagerParsePrefix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1/32"},
		{"192.0.2.1/24", ""}, // host bits set: a typo, refused rather than widened
		{"192.0.2.0/24", "192.0.2.0/24"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"bogus", ""},
		{"fe80::1%eth0", ""},
	}
	for _, tt := range tests {
		p, err := ParsePrefix(tt.in)
		if got := fmt.Sprint(p); (err == nil) != (tt.want != "") || (err == nil && got != tt.want) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %q", tt.in, p, err, tt.want)
		}
	}
}

// BenchmarkDecide measures new bans per second with a real store (fsync
// on every commit, as in production) and one fake action.
func BenchmarkDecide(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		b.Run(fmt.Sprintf("nosync=%v", noSync), func(b *testing.B) {
			s, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			m, err := NewManager(ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}},
				s, []Action{&managerFake{name: "fake"}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			ctx := context.Background()
			d := detectors.Decision{Detector: "dictionary", Reason: "bench", Evidence: 5,
				Lines: []string{"NOQUEUE: reject: RCPT from unknown[10.0.0.1]: 550 5.1.1"}}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				d.Prefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
				if _, ok, err := m.Decide(ctx, d); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "bans/s")
		})
	}
}

// A ban made before its address was allowlisted (or before max_prefix was
// narrowed) is lifted at restore instead of going back into the firewall.
func TestManagerRestoreDropsDisallowed(t *testing.T) {
	f := &managerFake{name: "a"}
	env := managerNewSeeded(t, ManagerConfig{Allowlist: []string{"192.0.2.5"}, Ban: Config{MaxPrefixV4: 32}}, []store.Record{
		rec("192.0.2.5/32", t0.Add(-time.Hour), 3*time.Hour),    // now allowlisted
		rec("198.51.100.0/24", t0.Add(-time.Hour), 3*time.Hour), // now too broad
		rec("203.0.113.7/32", t0.Add(-time.Hour), 3*time.Hour),  // still banned
	}, f)
	if err := env.m.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, _, synced := f.calls()
	if len(synced) != 1 || len(synced[0]) != 1 || synced[0][0].Prefix.String() != "203.0.113.7/32" {
		t.Errorf("synced %v, want only 203.0.113.7/32", synced)
	}
	recs, _ := env.store.Active(t0)
	if len(recs) != 1 {
		t.Errorf("store still holds %d active bans", len(recs))
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "state", "mxguard.db")
	}
	s, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rec(p string, since time.Time, d time.Duration) store.Record {
	return store.Record{Prefix: netip.MustParsePrefix(p), Detector: "dictionary", Reason: "test",
		Evidence: 3, FirstSeen: since, LastSeen: since, Since: since, Until: since.Add(d), Offence: 1}
}

// Restore reports a failed first sync even when the retry has already
// succeeded by the time it looks (a retry backoff shorter than Flush's poll).
func TestManagerRestoreReportsFailedFirstSync(t *testing.T) {
	f := &managerFake{name: "b", failSync: 1}
	env := managerNewSeeded(t, ManagerConfig{RetryBase: time.Nanosecond, RetryMax: time.Nanosecond},
		[]store.Record{rec("192.0.2.1/32", t0.Add(-time.Hour), 3*time.Hour)}, f)
	err := env.m.Restore(context.Background())
	if err == nil || !strings.Contains(err.Error(), "sync b: ipset missing") {
		t.Errorf("Restore error = %v, want the failing first sync of b", err)
	}
	managerWait(t, "b's sync retried", func() bool { _, _, s := f.calls(); return len(s) == 1 })
}

// A dry run starts from the real block list: a real active ban is extended
// (not banned again), a real history escalates, and the real store is
// never written.
func TestManagerDryRunStartsFromRealStore(t *testing.T) {
	st := openStore(t, "")
	active := rec("192.0.2.1/32", t0.Add(-30*time.Minute), time.Hour)
	active.Lines = []string{"real evidence"}
	past := rec("192.0.2.2/32", t0.Add(-3*time.Hour), time.Hour)
	for _, r := range []store.Record{active, past} {
		if err := st.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.DeleteExpired(t0); err != nil {
		t.Fatal(err)
	}
	ledgerBefore, _ := st.Ledger(active.Prefix, 0)
	f := &managerFake{name: "printer"}
	m, err := NewManager(ManagerConfig{DryRun: true, Now: func() time.Time { return t0 },
		AllowSources: []func() ([]netip.Prefix, error){}}, st, []Action{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	if l, _ := m.List(t0); len(l) != 1 || l[0].Prefix != active.Prefix || l[0].DryRun {
		t.Errorf("dry run did not start from the real active ban: %+v", l)
	}
	b1, ok, err := m.Decide(ctx, managerDec("192.0.2.1", t0))
	if err != nil || !ok || b1.Offence != 1 || !b1.Since.Equal(active.Since) || b1.Evidence != 8 ||
		!b1.Until.Equal(t0.Add(time.Hour)) || !b1.DryRun {
		t.Errorf("decision on a real active ban = %+v %v %v, want an extension", b1, ok, err)
	}
	b2, _, _ := m.Decide(ctx, managerDec("192.0.2.2", t0))
	if b2.Offence != 2 || b2.Until.Sub(b2.Since) != 2*time.Hour {
		t.Errorf("real history not used: %+v", b2)
	}
	ex, err := m.Explain(active.Prefix)
	if err != nil || ex.Record == nil || len(ex.Record.Lines) != 2 || ex.Record.Lines[0] != "real evidence" || ex.DryRun == nil {
		t.Errorf("Explain in dry-run = %+v %v", ex, err)
	}
	// the real ban stays in force beside its would-be extension
	s, _ := m.Status()
	if s.ActiveBans != 1 || s.DryRunBans != 2 {
		t.Errorf("Status = %d real, %d dry-run; want 1 and 2", s.ActiveBans, s.DryRunBans)
	}
	if found, err := m.Unban(ctx, active.Prefix); !found || err != nil {
		t.Errorf("dry-run Unban = %v %v", found, err)
	}
	if _, ok := m.Lookup(active.Prefix.Addr(), t0); ok {
		t.Error("dry-run unban still found by Lookup")
	}
	// The real store is as it was.
	if r, ok, _ := st.Get(active.Prefix); !ok || r.Evidence != 3 || !r.Until.Equal(active.Until) {
		t.Errorf("real record changed: %+v %v", r, ok)
	}
	if h, _, _ := st.History(past.Prefix); h.Offences != 1 {
		t.Errorf("real history changed: %+v", h)
	}
	if _, ok, _ := st.Get(past.Prefix); ok {
		t.Error("dry-run ban written to the real store")
	}
	if l, _ := st.Ledger(active.Prefix, 0); len(l) != len(ledgerBefore) {
		t.Errorf("real ledger grew from %d to %d entries", len(ledgerBefore), len(l))
	}
}
