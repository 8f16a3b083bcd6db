package ban

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/store"
)

// fullStore is a memory store whose writes fail while full is set, as the
// bbolt store's do on a full state_dir.
type fullStore struct {
	*store.Memory

	mu     sync.Mutex
	full   bool
	puts   int // writes attempted
	failed int // of which refused
}

var errFull = fmt.Errorf("store /var/lib/mxguard/mxguard.db: put: write: %w", syscall.ENOSPC)

func newFullStore() *fullStore { return &fullStore{Memory: store.NewMemory(), full: true} }

func (s *fullStore) setFull(full bool) {
	s.mu.Lock()
	s.full = full
	s.mu.Unlock()
}

func (s *fullStore) refuse() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	if s.full {
		s.failed++
	}
	return s.full
}

func (s *fullStore) Put(r store.Record) error {
	if s.refuse() {
		return errFull
	}
	return s.Memory.Put(r)
}

func (s *fullStore) Delete(p netip.Prefix, now time.Time) (bool, error) {
	if s.refuse() {
		return false, errFull
	}
	return s.Memory.Delete(p, now)
}

func (s *fullStore) DeleteExpired(now time.Time) ([]store.Record, error) {
	if s.refuse() {
		return nil, errFull
	}
	return s.Memory.DeleteExpired(now)
}

type persistEnv struct {
	m     *Manager
	st    Store
	fake  *managerFake
	clock *managerClock
	logs  *managerSyncWriter
}

func persistNew(t *testing.T, st Store, cfg ManagerConfig) *persistEnv {
	t.Helper()
	env := &persistEnv{st: st, fake: &managerFake{name: "fw"}, clock: &managerClock{t: t0},
		logs: &managerSyncWriter{w: &bytes.Buffer{}}}
	cfg.Now = env.clock.Now
	cfg.AllowSources = []func() ([]netip.Prefix, error){}
	if cfg.RetryBase == 0 {
		cfg.RetryBase, cfg.RetryMax = 2*time.Millisecond, 10*time.Millisecond
	}
	m, err := NewManager(cfg, st, []Action{env.fake}, slog.New(slog.NewTextHandler(env.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	env.m = m
	return env
}

func (e *persistEnv) logText() string {
	e.logs.mu.Lock()
	defer e.logs.mu.Unlock()
	return e.logs.w.String()
}

func ipN(i int) string { return fmt.Sprintf("198.51.%d.%d", 100+i/250, 1+i%250) }

// A decision the store cannot take is applied at once, shows as banned,
// and lands in the store when it takes writes again; repeated decisions
// for one prefix are merged; the failure is logged once, not per decision.
func TestManagerFullStoreKeepsDecisions(t *testing.T) {
	st := newFullStore()
	env := persistNew(t, st, ManagerConfig{})
	ctx := context.Background()
	const n = 200
	for i := range n {
		b, banned, err := env.m.Decide(ctx, managerDec(ipN(i), t0))
		if err != nil || !banned {
			t.Fatalf("decision %d with the store full: banned=%v err=%v, want it kept", i, banned, err)
		}
		if b.Offence != 1 {
			t.Fatalf("offence = %d", b.Offence)
		}
	}
	// A repeat for a queued prefix extends the queued ban.
	again := managerDec(ipN(7), t0.Add(10*time.Minute))
	if b, banned, err := env.m.Decide(ctx, again); err != nil || !banned || b.Evidence != 10 || b.Offence != 1 {
		t.Fatalf("repeat: %+v banned=%v err=%v, want evidence 10 offence 1", b, banned, err)
	}
	env.m.Flush(ctx)
	applied, _, _ := env.fake.calls()
	firewalled := map[netip.Prefix]bool{}
	for _, b := range applied {
		firewalled[b.Prefix] = true
	}
	if len(firewalled) != n {
		t.Errorf("firewall got %d prefixes while the store was full, want %d", len(firewalled), n)
	}
	for i := range n {
		if _, ok := env.m.Banned(netip.MustParseAddr(ipN(i))); !ok {
			t.Fatalf("%s not in the ban index", ipN(i))
		}
	}
	if ex, err := env.m.Explain(netip.MustParsePrefix(ipN(7) + "/32")); err != nil || !ex.PersistPending ||
		!ex.Banned || ex.Record == nil || ex.Record.Evidence != 10 {
		t.Errorf("explain of a queued ban: %+v err=%v", ex, err)
	}
	ms, _ := env.m.Status()
	if ms.Persist.Pending != n || ms.Persist.Failures == 0 || !strings.Contains(ms.Persist.LastError, "no space left") {
		t.Errorf("persist status = %+v, want %d pending with the error", ms.Persist, n)
	}
	if ms.ActiveBans != n {
		t.Errorf("active bans = %d, want %d", ms.ActiveBans, n)
	}
	if got := strings.Count(env.logText(), "level=ERROR"); got != 1 {
		t.Errorf("%d error lines for %d failed writes, want 1:\n%s", got, st.failed, env.logText())
	}

	st.setFull(false)
	managerWait(t, "the queue to drain", func() bool { ms, _ := env.m.Status(); return ms.Persist.Pending == 0 })
	for i := range n {
		r, ok, _ := st.Memory.Get(netip.MustParsePrefix(ipN(i) + "/32"))
		if !ok || r.Offence != 1 {
			t.Fatalf("%s not in the store after space came back", ipN(i))
		}
		if want := 5 + 5*min(1, boolInt(i == 7)); r.Evidence != want {
			t.Errorf("%s evidence %d, want %d (merged)", ipN(i), r.Evidence, want)
		}
	}
	if h, _, _ := st.History(netip.MustParsePrefix(ipN(7) + "/32")); h.Offences != 1 {
		t.Errorf("history of the merged prefix: %d offences, want 1", h.Offences)
	}
	ms, _ = env.m.Status()
	if ms.Persist.Persisted != n {
		t.Errorf("persisted = %d, want %d", ms.Persist.Persisted, n)
	}

	// A restart over the same store keeps them.
	env2 := persistNew(t, st, ManagerConfig{})
	if bans, _ := env2.m.List(t0); len(bans) != n {
		t.Errorf("after a restart %d bans, want %d", len(bans), n)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// When the queue is full the queued bans are kept and a decision for a new
// prefix is refused as not recorded (counted), so that the caller can keep
// its evidence; a decision for a queued prefix is still merged.
func TestManagerPersistQueueBound(t *testing.T) {
	env := persistNew(t, newFullStore(), ManagerConfig{PersistQueueMax: 3})
	ctx := context.Background()
	for i := range 3 {
		if _, _, err := env.m.Decide(ctx, managerDec(ipN(i), t0)); err != nil {
			t.Fatal(err)
		}
	}
	_, banned, err := env.m.Decide(ctx, managerDec(ipN(3), t0))
	if !errors.Is(err, ErrNotRecorded) || banned {
		t.Fatalf("4th prefix with the queue full: banned=%v err=%v, want ErrNotRecorded", banned, err)
	}
	if _, ok := env.m.Banned(netip.MustParseAddr(ipN(3))); ok {
		t.Error("a refused decision is in the ban index")
	}
	if _, banned, err := env.m.Decide(ctx, managerDec(ipN(0), t0.Add(time.Minute))); err != nil || !banned {
		t.Errorf("repeat for a queued prefix: banned=%v err=%v", banned, err)
	}
	env.m.Flush(ctx)
	applied, _, _ := env.fake.calls()
	got := map[string]bool{}
	for _, b := range applied {
		got[b.Prefix.Addr().String()] = true
	}
	if len(got) != 3 || got[ipN(3)] {
		t.Errorf("applied %v, want the 3 queued prefixes only", applied)
	}
	ms, _ := env.m.Status()
	if ms.Persist.Pending != 3 || ms.Persist.Dropped != 1 {
		t.Errorf("persist status = %+v, want 3 pending, 1 dropped", ms.Persist)
	}
}

// A queued ban that ends before the store takes writes is revoked and
// leaves the index at its time, and is still recorded (its offence counts
// for escalation); a queued ban lifted by hand, even while the store
// refuses writes, is not written afterwards.
func TestManagerPersistQueueExpiryAndUnban(t *testing.T) {
	st := newFullStore()
	env := persistNew(t, st, ManagerConfig{})
	ctx := context.Background()
	a, b := ipN(1), ipN(2)
	env.m.Decide(ctx, managerDec(a, t0))
	env.m.Decide(ctx, managerDec(b, t0))
	if found, err := env.m.Unban(ctx, netip.MustParsePrefix(b+"/32")); err != nil || !found {
		t.Fatalf("unban of a queued ban with the store full: found=%v err=%v", found, err)
	}
	if _, ok := env.m.Banned(netip.MustParseAddr(b)); ok {
		t.Error("unbanned queued ban still in the index")
	}
	env.clock.Set(t0.Add(2 * time.Hour)) // the first ban (1h) is over
	if n, _ := env.m.Expire(ctx, env.clock.Now()); n != 1 {
		t.Errorf("expired %d queued bans, want 1", n)
	}
	env.m.Flush(ctx)
	if _, revoked, _ := env.fake.calls(); len(revoked) != 2 {
		t.Errorf("revoked %v, want both", revoked)
	}
	if _, ok := env.m.Banned(netip.MustParseAddr(a)); ok {
		t.Error("expired queued ban still in the index")
	}
	ms, _ := env.m.Status()
	if ms.ActiveBans != 0 || ms.Persist.Pending != 1 {
		t.Errorf("status %+v, want no active ban and the expired one still queued", ms)
	}

	// Offence 2 while the first is still queued.
	got, _, err := env.m.Decide(ctx, managerDec(a, env.clock.Now()))
	if err != nil || got.Offence != 2 {
		t.Fatalf("second offence while the first is queued: %+v err=%v, want offence 2", got, err)
	}
	st.setFull(false)
	managerWait(t, "the queue to drain", func() bool { ms, _ := env.m.Status(); return ms.Persist.Pending == 0 })
	if r, ok, _ := st.Memory.Get(netip.MustParsePrefix(a + "/32")); !ok || r.Offence != 2 {
		t.Errorf("store holds %+v, want offence 2", r)
	}
	if _, ok, _ := st.Memory.Get(netip.MustParsePrefix(b + "/32")); ok {
		t.Error("a ban lifted by hand while queued was written")
	}
}

// refusingStore is a Store whose writes can be refused.
type refusingStore interface {
	Store
	setFull(bool)
}

// Three offences of one prefix while the store refuses writes: all are
// written, in order, so that escalation counts them afterwards; with the
// bbolt store in one transaction (PutAll).
func TestManagerPersistQueueKeepsEarlierOffences(t *testing.T) {
	bolt := &boltFull{Store: openStore(t, "")}
	bolt.setFull(true)
	for _, st := range []refusingStore{newFullStore(), bolt} {
		t.Run(fmt.Sprintf("%T", st), func(t *testing.T) { testKeepsEarlierOffences(t, st) })
	}
}

func testKeepsEarlierOffences(t *testing.T, st refusingStore) {
	env := persistNew(t, st, ManagerConfig{})
	ctx := context.Background()
	a := ipN(1)
	p := netip.MustParsePrefix(a + "/32")
	for i, at := range []time.Time{t0, t0.Add(2 * time.Hour), t0.Add(5 * time.Hour)} {
		env.clock.Set(at)
		env.m.Expire(ctx, at)
		b, _, err := env.m.Decide(ctx, managerDec(a, at))
		if err != nil || b.Offence != i+1 {
			t.Fatalf("offence %d while the store is full: %+v err=%v", i+1, b, err)
		}
	}
	st.setFull(false)
	managerWait(t, "the queue to drain", func() bool { ms, _ := env.m.Status(); return ms.Persist.Pending == 0 })
	h, _, _ := st.History(p)
	if h.Offences != 3 {
		t.Fatalf("history after the drain: %+v, want 3 offences", h)
	}
	if r, _, _ := st.Get(p); r.Offence != 3 || !r.Since.Equal(t0.Add(5*time.Hour)) {
		t.Errorf("stored %+v, want the third offence", r)
	}
	env.clock.Set(t0.Add(10 * time.Hour))
	env.m.Expire(ctx, env.clock.Now())
	if b, _, _ := env.m.Decide(ctx, managerDec(a, env.clock.Now())); b.Offence != 4 {
		t.Errorf("next offence %d, want 4", b.Offence)
	}
}

// boltFull is the bbolt store with writes refused while full is set.
type boltFull struct {
	*store.Store
	full atomic.Bool
}

func (s *boltFull) setFull(full bool) { s.full.Store(full) }

func (s *boltFull) Put(r store.Record) error {
	if s.full.Load() {
		return errFull
	}
	return s.Store.Put(r)
}

func (s *boltFull) PutAll(rs []store.Record) error {
	if s.full.Load() {
		return errFull
	}
	return s.Store.PutAll(rs)
}

// BenchmarkPersistDrain writes 1000 queued bans to a bbolt store (synced,
// as the daemon's) once it takes writes again: the time per ban is what a
// long outage costs to catch up (one transaction per ban).
func BenchmarkPersistDrain(b *testing.B) {
	const queued = 1000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bs, err := store.Open(filepath.Join(b.TempDir(), "mxguard.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		st := &boltFull{Store: bs}
		st.full.Store(true)
		m, err := NewManager(ManagerConfig{Now: func() time.Time { return t0 }, RetryBase: time.Hour,
			AllowSources: []func() ([]netip.Prefix, error){}}, st, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		for j := range queued {
			if _, _, err := m.Decide(context.Background(), managerDec(ipN(j), t0)); err != nil {
				b.Fatal(err)
			}
		}
		st.full.Store(false)
		b.StartTimer()
		m.drainPersist(true)
		b.StopTimer()
		if ms, _ := m.Status(); ms.Persist.Pending != 0 {
			b.Fatalf("%d still queued", ms.Persist.Pending)
		}
		m.Close()
		bs.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*queued), "ns/ban")
}

// The queue's order stays in proportion to the queue while decisions keep
// writing prefixes (a store that takes some writes and refuses others).
func TestPersistQueueOrderCompacts(t *testing.T) {
	q := newPersistQueue(10)
	keep := netip.MustParsePrefix("192.0.2.1/32")
	q.items[keep] = &queuedRecord{}
	q.order = append(q.order, keep)
	for i := range 10000 {
		p := netip.MustParsePrefix(ipN(i) + "/32")
		q.items[p] = &queuedRecord{}
		q.order = append(q.order, p)
		q.remove(p) // written by a decision
		if got := q.oldest(5); len(got) != 1 || got[0] != keep {
			t.Fatalf("oldest = %v, want only %s", got, keep)
		}
	}
	if len(q.order) > 2048 {
		t.Errorf("order holds %d entries for a queue of %d", len(q.order), len(q.items))
	}
}
