package peers

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
)

// benchZone is n listings (90% IPv4 /32, 10% IPv6 /128), each an A and a
// TXT in the agreed form, as a publisher of n bans writes them.
func benchZone(origin string, n int) []dns.RR {
	until := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	rrs := make([]dns.RR, 0, 2*n+1)
	rrs = append(rrs, &dns.NS{Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 3600}, Ns: "ns1.example.org."})
	for i := range n {
		var p netip.Prefix
		if i%10 == 9 {
			var a [16]byte
			binary.BigEndian.PutUint32(a[:], 0x20010db8)
			binary.BigEndian.PutUint64(a[8:], uint64(i))
			p = netip.PrefixFrom(netip.AddrFrom16(a), 128)
		} else {
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], 0x0b000000+uint32(i)) // 11.0.0.0 on
			p = netip.PrefixFrom(netip.AddrFrom4(a), 32)
		}
		name := reverseName(p) + "." + origin
		rrs = append(rrs,
			&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 2)},
			&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("dictionary: 5 unknown recipients in 10m; until %s", until)}})
	}
	return rrs
}

// nopAction counts what reaches a firewall backend, without one.
type nopAction struct{}

func (nopAction) Name() string                               { return "nop" }
func (nopAction) Apply(context.Context, ban.Ban) error       { return nil }
func (nopAction) Revoke(context.Context, netip.Prefix) error { return nil }
func (nopAction) Sync(context.Context, []ban.Ban) error      { return nil }
func (nopAction) Close() error                               { return nil }

// BenchmarkMirror100k: the first transfer of a peer zone of 100k
// listings (an AXFR over loopback TCP from an in-process primary, parsing,
// and SyncMirror into a fresh Manager with one no-op action), then a
// check that finds the zone unchanged (an IXFR answered with the SOA and
// SyncMirror of the same 100k). MB-held is the heap still in use after the
// first transfer (zone copy, Manager index and mirrors), measured after a
// GC. save and load are the zone's copy in state_dir (written after a
// transfer that changed it, read at start).
//
//	go test -run '^$' -bench Mirror100k -benchmem -benchtime 3x ./internal/peers
func BenchmarkMirror100k(b *testing.B) {
	const n = 100_000
	origin := "bl.mx2.example.org."
	p := startPrimary(b, origin)
	p.mu.Lock()
	p.versions[2] = benchZone(origin, n)
	p.serial = 2
	p.mu.Unlock()
	cfg := peerConfig(p.addr)

	b.Run("axfr", func(b *testing.B) {
		var held float64
		var cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			mgr, err := ban.NewManager(ban.ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}},
				store.NewMemory(), []ban.Action{nopAction{}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			f := NewFollower(cfg, mgr, nil, nil)
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			b.StartTimer()
			c0 := cpuTime()
			f.Check(context.Background())
			cpu += cpuTime() - c0
			b.StopTimer()
			if st := f.Status(); st.Entries != n || st.LastError != "" {
				b.Fatalf("status %+v", st)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := mgr.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			cancel()
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			held = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
			runtime.KeepAlive(f)
			mgr.Close()
			b.StartTimer()
		}
		b.ReportMetric(held, "MB-held")
		b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	})
	b.Run("save", func(b *testing.B) {
		f := NewFollower(cfg, newTestManager(b), nil, nil)
		f.SetStateDir(b.TempDir())
		f.Check(context.Background())
		for b.Loop() {
			if err := f.save(f.z); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("load", func(b *testing.B) {
		f := NewFollower(cfg, newTestManager(b), nil, nil)
		f.SetStateDir(b.TempDir())
		f.Check(context.Background())
		for b.Loop() {
			z, _, err := f.load()
			if err != nil || len(z.names) != n {
				b.Fatalf("load: %v", err)
			}
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		mgr, err := ban.NewManager(ban.ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}},
			store.NewMemory(), []ban.Action{nopAction{}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer mgr.Close()
		f := NewFollower(cfg, mgr, nil, nil)
		f.Check(context.Background())
		var cpu time.Duration
		for b.Loop() {
			c0 := cpuTime()
			f.Check(context.Background())
			cpu += cpuTime() - c0
		}
		b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
		if st := f.Status(); st.Mirror.Unchanged != n || st.LastError != "" {
			b.Fatalf("status %+v", st)
		}
	})
}

// cpuTime is the process's CPU time (user and system, every thread: the
// in-process primary's and the GC's too). On a shared machine it says
// more than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
