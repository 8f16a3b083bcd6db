package ban

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
)

func indexBan(p string, until time.Time) Ban {
	return Ban{Prefix: netip.MustParsePrefix(p), Detector: "dictionary", Reason: "ban of " + p,
		Since: t0, Until: until, Offence: 1}
}

func TestIndexLongestPrefixMatch(t *testing.T) {
	x := newBanIndex()
	for _, b := range []Ban{
		indexBan("192.0.2.7/32", t0.Add(time.Hour)),
		indexBan("192.0.2.0/24", t0.Add(2*time.Hour)),
		indexBan("192.0.0.0/16", t0.Add(3*time.Hour)),
		indexBan("198.51.100.9/32", t0),                  // over at t0
		indexBan("198.51.100.0/24", t0.Add(time.Minute)), // the match for .9 at t0
		indexBan("203.0.113.128/25", t0.Add(time.Hour)),
		indexBan("2001:db8::1/128", t0.Add(time.Hour)),
		indexBan("2001:db8::/64", t0.Add(2*time.Hour)),
		indexBan("2001:db8::/48", t0.Add(-time.Hour)), // over
		indexBan("2001:db8:1:2:3::/80", t0.Add(time.Hour)),
		indexBan("2001:db8:1::/48", t0.Add(2*time.Hour)),
		indexBan("2001:db9::/33", t0.Add(time.Hour)),
	} {
		x.set(b)
	}
	tests := []struct {
		addr string
		want string // matching prefix, "" for none
	}{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"192.0.2.8", "192.0.2.0/24"},
		{"192.0.3.1", "192.0.0.0/16"},
		{"192.1.0.1", ""},
		{"198.51.100.9", "198.51.100.0/24"},
		{"198.51.101.9", ""},
		{"203.0.113.127", ""},
		{"203.0.113.128", "203.0.113.128/25"},
		{"203.0.113.255", "203.0.113.128/25"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::2", "2001:db8::/64"},
		{"2001:db8:0:1::2", ""}, // only the expired /48
		{"2001:db8:1:2:3::9", "2001:db8:1:2:3::/80"},
		{"2001:db8:1:2:4::9", "2001:db8:1::/48"},
		{"2001:db9:7fff::1", "2001:db9::/33"},
		{"2001:db9:8000::1", ""},
		{"::c000:207", ""}, // 192.0.2.7's bits as IPv6 are not 192.0.2.7
		{"10.0.0.1", ""},
	}
	for _, tt := range tests {
		b, ok := x.lookup(netip.MustParseAddr(tt.addr), t0, false)
		if got := b.Prefix.String(); ok != (tt.want != "") || ok && got != tt.want {
			t.Errorf("lookup(%s) = %s %v, want %q", tt.addr, got, ok, tt.want)
		}
		if ok && b.Reason != "ban of "+tt.want {
			t.Errorf("lookup(%s) reason %q", tt.addr, b.Reason)
		}
	}
	// /0 matches everything of its family; removal drops the length.
	x.set(indexBan("0.0.0.0/0", t0.Add(time.Hour)))
	if b, ok := x.lookup(netip.MustParseAddr("10.0.0.1"), t0, false); !ok || b.Prefix.Bits() != 0 {
		t.Errorf("/0 did not match: %+v %v", b, ok)
	}
	if _, ok := x.lookup(netip.MustParseAddr("2001:db8:5::1"), t0, false); ok {
		t.Error("an IPv4 /0 matched IPv6")
	}
	x.remove(netip.MustParsePrefix("0.0.0.0/0"))
	x.remove(netip.MustParsePrefix("192.0.2.7/32"))
	if b, _ := x.lookup(netip.MustParseAddr("192.0.2.7"), t0, false); b.Prefix.String() != "192.0.2.0/24" {
		t.Errorf("after removal lookup = %v", b.Prefix)
	}
	if x.v4[0] != nil || x.v4Lens&1 != 0 {
		t.Error("the emptied /0 is still in the index")
	}
	if real, dry := x.count(t0); real != 9 || dry != 0 {
		t.Errorf("count = %d %d", real, dry)
	}
}

func TestIndexLookupDoesNotAllocate(t *testing.T) {
	x := newBanIndex()
	x.set(indexBan("192.0.2.0/24", t0.Add(time.Hour)))
	x.set(indexBan("2001:db8::/64", t0.Add(time.Hour)))
	for _, a := range []string{"192.0.2.1", "192.0.3.1", "2001:db8::1", "2001:db9::1"} {
		addr := netip.MustParseAddr(a)
		if n := testing.AllocsPerRun(100, func() { x.lookup(addr, t0, true) }); n != 0 {
			t.Errorf("lookup(%s) allocates %v times", a, n)
		}
	}
}

// The index follows every change of the bans: load at start, ban,
// extension, unban, expiry, Recheck; Restore syncs from it.
func TestManagerIndexFollowsBans(t *testing.T) {
	ctx := context.Background()
	f := &managerFake{name: "fake"}
	st := openStore(t, "")
	if err := st.Put(rec("198.51.100.7/32", t0.Add(-time.Hour), 2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	clock := &managerClock{t: t0}
	var allow []netip.Prefix
	m, err := NewManager(ManagerConfig{Now: clock.Now, AllowSources: []func() ([]netip.Prefix, error){
		func() ([]netip.Prefix, error) { return allow, nil }}}, st, []Action{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lookup := func(a string) (Ban, bool) { return m.Lookup(netip.MustParseAddr(a), clock.Now()) }
	if b, ok := lookup("198.51.100.7"); !ok || !b.Until.Equal(t0.Add(time.Hour)) {
		t.Errorf("ban in the store at start not loaded: %+v %v", b, ok)
	}
	// Ban and extension.
	m.Decide(ctx, managerDec("192.0.2.0/24", t0))
	if b, ok := lookup("192.0.2.9"); !ok || b.Detector != "dictionary" || b.Reason != "5 unknown recipients in 10m0s" || !b.Until.Equal(t0.Add(time.Hour)) {
		t.Errorf("new ban: %+v %v", b, ok)
	}
	if r, ok := m.Banned(netip.MustParseAddr("192.0.2.9")); !ok || r != "5 unknown recipients in 10m0s" {
		t.Errorf("Banned = %q %v", r, ok)
	}
	clock.Set(t0.Add(30 * time.Minute)) // a decision is never dated after the clock
	m.Decide(ctx, managerDec("192.0.2.0/24", t0.Add(30*time.Minute)))
	if b, _ := lookup("192.0.2.9"); !b.Until.Equal(t0.Add(90*time.Minute)) || b.Evidence != 10 {
		t.Errorf("extension not in the index: %+v", b)
	}
	// Unban.
	m.Ban(ctx, netip.MustParsePrefix("203.0.113.1/32"), time.Hour, "")
	m.Unban(ctx, netip.MustParsePrefix("203.0.113.1/32"))
	if _, ok := lookup("203.0.113.1"); ok {
		t.Error("unbanned address still found")
	}
	// Expiry: over at once, and gone from the index after the sweep.
	clock.Set(t0.Add(time.Hour))
	if _, ok := lookup("198.51.100.7"); ok {
		t.Error("an expired ban matched before the sweep")
	}
	if n, _ := m.Expire(ctx, clock.Now()); n != 1 {
		t.Errorf("Expire = %d", n)
	}
	if _, ok := m.index.get(netip.MustParsePrefix("198.51.100.7/32")); ok {
		t.Error("expired ban still indexed")
	}
	// Recheck lifts what the allowlist now covers.
	allow = []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32")}
	if n, err := m.Recheck(ctx); n != 1 || err != nil {
		t.Errorf("Recheck = %d %v", n, err)
	}
	if _, ok := lookup("192.0.2.9"); ok {
		t.Error("ban lifted by Recheck still found")
	}
	// Restore syncs what the index holds.
	m.Ban(ctx, netip.MustParsePrefix("2001:db8::/48"), 3*time.Hour, "")
	if err := m.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if b, ok := lookup("2001:db8::5"); !ok || b.Prefix.String() != "2001:db8::/48" || b.Detector != DetectorManual {
		t.Errorf("manual ban: %+v %v", b, ok)
	}
	l, _ := m.List(clock.Now())
	if len(l) != 1 || l[0].Prefix.String() != "2001:db8::/48" {
		t.Errorf("List = %+v", l)
	}
	_, _, synced := f.calls()
	if len(synced) != 1 || len(synced[0]) != 1 || synced[0][0].Prefix.String() != "2001:db8::/48" {
		t.Errorf("synced %+v", synced)
	}
}

// Lookups run while bans come and go (go test -race).
func TestManagerLookupConcurrent(t *testing.T) {
	env := managerNew(t, ManagerConfig{}, &managerFake{name: "fake"})
	ctx := context.Background()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for {
				select {
				case <-done:
					return
				default:
				}
				a := netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(64))})
				if b, ok := env.m.Lookup(a, t0); ok && !b.Prefix.Contains(a) {
					t.Errorf("Lookup(%s) = %s", a, b.Prefix)
				}
				env.m.Banned(a)
			}
		}()
	}
	for i := range 500 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 64)}), 32)
		if i%3 == 2 {
			if _, err := env.m.Unban(ctx, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		d := managerDec(p.Addr().String(), t0)
		if _, _, err := env.m.Decide(ctx, d); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			env.m.Expire(ctx, t0)
			env.m.List(t0)
		}
	}
	close(done)
	wg.Wait()
}

// BenchmarkIndexLookup: 100k bans (90% IPv4 /32, some /24 and /16; IPv6
// /128, /64, /48), looking up a mix of banned addresses, addresses inside
// banned networks and addresses not banned.
func BenchmarkIndexLookup(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	x := newBanIndex()
	until := t0.Add(time.Hour)
	v4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	}
	v6 := func() netip.Addr {
		var a [16]byte
		a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
		for i := 4; i < 16; i++ {
			a[i] = byte(r.Uint32())
		}
		return netip.AddrFrom16(a)
	}
	var banned []netip.Addr
	for i := range 100_000 {
		var a netip.Addr
		var bits int
		switch k := i % 100; {
		case k < 90:
			a, bits = v4(), 32
		case k < 94:
			a, bits = v4(), 24
		case k < 95:
			a, bits = v4(), 16
		case k < 98:
			a, bits = v6(), 128
		case k < 99:
			a, bits = v6(), 64
		default:
			a, bits = v6(), 48
		}
		p, _ := a.Prefix(bits)
		x.set(Ban{Prefix: p, Detector: "dictionary", Reason: "bench", Since: t0, Until: until, Offence: 1})
		banned = append(banned, a)
	}
	// Half banned (or inside a banned network), half random.
	lookups := make([]netip.Addr, 1<<12)
	for i := range lookups {
		switch i % 4 {
		case 0, 1:
			lookups[i] = banned[r.IntN(len(banned))]
		case 2:
			lookups[i] = v4()
		default:
			lookups[i] = v6()
		}
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	hits := 0
	for i := 0; b.Loop(); i++ {
		if _, ok := x.lookup(lookups[i&(len(lookups)-1)], t0, false); ok {
			hits++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	// On a shared machine wall time overstates the cost: report the
	// process's CPU time too (run with -cpu 1: nothing else runs).
	b.ReportMetric(float64(b.N)/(cpuTime(b)-cpu0).Seconds(), "lookups/cpu-s")
	if hits == 0 {
		b.Fatal("no lookup matched")
	}
}

// A store's records come back from the Manager's index the same as from
// the store (List no longer decodes the store).
func TestManagerListMatchesStore(t *testing.T) {
	env := managerNew(t, ManagerConfig{}, &managerFake{name: "fake"})
	ctx := context.Background()
	env.m.Decide(ctx, managerDec("192.0.2.1", t0))
	env.m.Decide(ctx, managerDec("2001:db8::/64", t0.Add(time.Minute)))
	env.m.Decide(ctx, managerDec("192.0.2.1", t0.Add(10*time.Minute)))
	env.m.Ban(ctx, netip.MustParsePrefix("198.51.100.0/24"), 5*time.Hour, "by hand")
	l, _ := env.m.List(t0.Add(20 * time.Minute))
	recs, _ := env.store.Active(t0.Add(20 * time.Minute))
	want := make([]Ban, 0, len(recs))
	for _, r := range recs {
		want = append(want, FromRecord(r))
	}
	sortBans(want)
	if len(l) != 3 || len(l) != len(want) {
		t.Fatalf("List = %+v, store = %+v", l, want)
	}
	for i := range l {
		if !sameBan(l[i], want[i]) {
			t.Errorf("List[%d] = %+v, store has %+v", i, l[i], want[i])
		}
	}
}

func sameBan(a, b Ban) bool {
	return a.Prefix == b.Prefix && a.Detector == b.Detector && a.Reason == b.Reason && a.Evidence == b.Evidence &&
		a.Since.Equal(b.Since) && a.Until.Equal(b.Until) && a.Offence == b.Offence && a.DryRun == b.DryRun
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
