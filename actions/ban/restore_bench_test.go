package ban

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/store"
)

// BenchmarkRestore100k measures start-up with 100k active bans, each with
// five evidence lines: NewManager (which loads the ban index from the
// store) and Restore (sweep, recheck, Sync of one fake action).
func BenchmarkRestore100k(b *testing.B) {
	const n = 100000
	dir := b.TempDir()
	s, err := store.Open(dir+"/mxguard.db", store.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	line := strings.Repeat("x", 200)
	for i := 0; i < n; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		if err := s.Put(store.Record{Prefix: p, Detector: "dictionary", Reason: "5 unknown recipients", Evidence: 5,
			Lines: []string{line, line, line, line, line}, FirstSeen: now, LastSeen: now, Since: now,
			Until: now.Add(24 * time.Hour), Offence: 1}); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := store.Open(dir+"/mxguard.db", store.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		f := &managerFake{name: "fake"}
		start := time.Now()
		m, err := NewManager(ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}}, s, []Action{f}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Restore(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/restore")
		_, _, synced := f.calls()
		if len(synced) != 1 || len(synced[0]) != n {
			b.Fatalf("synced %d lists", len(synced))
		}
		m.Close()
		s.Close()
	}
}

// BenchmarkList100k is the daemon's side of `mxguard list` at 100k bans:
// the sorted list from the ban index, then encoded to JSON ban by ban as
// the control socket streams it (AppendJSON).
//
//	go test -run '^$' -bench List100k ./actions/ban/
func BenchmarkList100k(b *testing.B) {
	m, err := NewManager(ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}}, store.NewMemory(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	for i := range 100000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		if _, err := m.Ban(ctx, p, 24*time.Hour, "5 unknown recipients within 10m"); err != nil {
			b.Fatal(err)
		}
	}
	for _, encode := range []bool{false, true} {
		b.Run(map[bool]string{false: "list", true: "list+json"}[encode], func(b *testing.B) {
			var buf []byte
			for range b.N {
				bans, err := m.List(time.Now())
				if err != nil || len(bans) != 100000 {
					b.Fatal(len(bans), err)
				}
				if encode {
					for _, x := range bans {
						buf = x.AppendJSON(buf[:0])
					}
				}
			}
		})
	}
}
