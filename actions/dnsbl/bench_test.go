package dnsbl

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
)

// benchBans are n bans of mixed prefix lengths, deterministic: 55% IPv4
// /32, 10% /24, 5% /28 (off the label boundary: 16 names each in a
// transfer), 20% IPv6 /128, 7% /64, 3% /48.
func benchBans(n int, until time.Time) []ban.Ban {
	rng := rand.New(rand.NewPCG(1, 2))
	dets := []string{"dictionary", "error_burst", "pregreet", "sasl_bruteforce", "manual", "bad_helo"}
	seen := map[netip.Prefix]bool{}
	out := make([]ban.Ban, 0, n)
	for len(out) < n {
		var p netip.Prefix
		switch r := rng.IntN(100); {
		case r < 70:
			a := netip.AddrFrom4([4]byte{byte(11 + rng.IntN(200)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
			bits := 32
			if r >= 55 && r < 65 {
				bits = 24
			} else if r >= 65 {
				bits = 28
			}
			p, _ = a.Prefix(bits)
		default:
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			for i := 2; i < 16; i++ {
				b[i] = byte(rng.IntN(256))
			}
			bits := 128
			if r >= 90 && r < 97 {
				bits = 64
			} else if r >= 97 {
				bits = 48
			}
			p, _ = netip.AddrFrom16(b).Prefix(bits)
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, ban.Ban{Prefix: p, Detector: dets[rng.IntN(len(dets))],
			Reason: "5 unknown recipients within 10m0s", Until: until.Add(time.Duration(rng.IntN(3600)) * time.Second)})
	}
	return out
}

// benchNames are query names: half for addresses inside a ban, half for
// random addresses (almost all not listed), IPv4 and IPv6 as banned.
func benchNames(bans []ban.Ban, n int, zone string) []string {
	rng := rand.New(rand.NewPCG(3, 4))
	out := make([]string, n)
	for i := range out {
		b := bans[rng.IntN(len(bans))]
		a := b.Prefix.Addr().AsSlice()
		if i%2 == 1 {
			for j := range a {
				a[j] = byte(rng.IntN(256))
			}
		} else {
			// a random address inside the prefix
			for bit := b.Prefix.Bits(); bit < len(a)*8; bit++ {
				if rng.IntN(2) == 1 {
					a[bit/8] |= 1 << (7 - bit%8)
				}
			}
		}
		addr, _ := netip.AddrFromSlice(a)
		out[i] = queryName(addr, zone)
	}
	return out
}

func newBenchPublisher(tb testing.TB, n int, logs *bytes.Buffer) (*Publisher, []ban.Ban) {
	tb.Helper()
	cfg := xfrConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Secondaries = []string{"127.0.0.1:9"} // may transfer; NOTIFY goes nowhere
	cfg.RateLimit.QPS = 0
	var log *slog.Logger
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, nil))
	}
	p, err := New(cfg, Options{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	bans := benchBans(n, time.Now().Add(24*time.Hour))
	if err := p.Sync(context.Background(), bans); err != nil {
		tb.Fatal(err)
	}
	return p, bans
}

// discardWriter is a dns.ResponseWriter that packs and drops the reply.
type discardWriter struct{ recorder }

func (d *discardWriter) WriteMsg(m *dns.Msg) error { _, err := m.Pack(); return err }

// BenchmarkQueryHandler is the answer path alone (lookup, records,
// packing), without sockets, at 100k bans.
func BenchmarkQueryHandler(b *testing.B) {
	p, bans := newBenchPublisher(b, 100_000, nil)
	names := benchNames(bans, 1<<16, p.zone)
	var i atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{recorder{remote: udpAddr("192.0.2.1")}}
		for pb.Next() {
			m := new(dns.Msg)
			m.SetQuestion(names[i.Add(1)%uint64(len(names))], dns.TypeA)
			p.ServeDNS(w, m)
		}
	})
}

// BenchmarkQueryUDP is queries over loopback UDP from parallel Go
// clients (one socket each) at 100k bans; listed = answers with a record.
func BenchmarkQueryUDP(b *testing.B) {
	p, bans := newBenchPublisher(b, 100_000, nil)
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	names := benchNames(bans, 1<<16, p.zone)
	var i, listed atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := &dns.Client{Timeout: 2 * time.Second}
		co, err := c.Dial(p.Addr())
		if err != nil {
			b.Error(err)
			return
		}
		defer co.Close()
		for pb.Next() {
			m := new(dns.Msg)
			m.SetQuestion(names[i.Add(1)%uint64(len(names))], dns.TypeA)
			r, _, err := c.ExchangeWithConn(m, co)
			if err != nil {
				b.Error(err)
				return
			}
			if len(r.Answer) > 0 {
				listed.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
	b.ReportMetric(float64(listed.Load())/float64(b.N), "listed/op")
}

var transferBytes = regexp.MustCompile(`kind=(AXFR|IXFR) .* records=(\d+) bytes=(\d+)`)

// transferIn runs one transfer over TCP with the test key and returns
// the records received.
func transferIn(b *testing.B, p *Publisher, m *dns.Msg) int {
	m.SetTsig("xfr-key.", dns.HmacSHA256, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{"xfr-key.": testSecret}}
	ch, err := tr.In(m, p.Addr())
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for env := range ch {
		if env.Error != nil {
			b.Fatal(env.Error)
		}
		n += len(env.RR)
	}
	return n
}

func lastTransfer(logs *bytes.Buffer) (records, size int) {
	var last []string
	sc := bufio.NewScanner(bytes.NewReader(logs.Bytes()))
	for sc.Scan() {
		if m := transferBytes.FindStringSubmatch(sc.Text()); m != nil {
			last = m
		}
	}
	if last == nil {
		return 0, 0
	}
	records, _ = strconv.Atoi(last[2])
	size, _ = strconv.Atoi(last[3])
	return records, size
}

// BenchmarkAXFR100k is a whole-zone transfer of 100k bans over loopback
// TCP with TSIG, client included.
func BenchmarkAXFR100k(b *testing.B) {
	logs := &bytes.Buffer{}
	p, _ := newBenchPublisher(b, 100_000, logs)
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	n := 0
	for range b.N {
		m := new(dns.Msg)
		m.SetAxfr(p.zone)
		n = transferIn(b, p, m)
	}
	b.StopTimer()
	time.Sleep(50 * time.Millisecond) // the server logs after its last write
	_, size := lastTransfer(logs)
	b.ReportMetric(float64(n), "records")
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}

// BenchmarkIXFROneChange is one new ban followed by an IXFR from the
// serial before it, at 100k bans.
func BenchmarkIXFROneChange(b *testing.B) {
	logs := &bytes.Buffer{}
	p, _ := newBenchPublisher(b, 100_000, logs)
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	b.ResetTimer()
	n := 0
	for i := range b.N {
		from := p.Serial()
		p.Apply(context.Background(), ban.Ban{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
			Detector: "dictionary", Reason: "5 unknown recipients within 10m0s", Until: until})
		m := new(dns.Msg)
		m.SetIxfr(p.zone, from, "ns.", "mbox.")
		n = transferIn(b, p, m)
	}
	b.StopTimer()
	time.Sleep(50 * time.Millisecond)
	_, size := lastTransfer(logs)
	b.ReportMetric(float64(n), "records")
	b.ReportMetric(float64(size), "bytes")
}

// BenchmarkSync100k is the start-up fill: 100k bans in one serial step.
func BenchmarkSync100k(b *testing.B) {
	bans := benchBans(100_000, time.Now().Add(24*time.Hour))
	cfg := testConfig()
	b.ResetTimer()
	for range b.N {
		p, err := New(cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		p.Sync(context.Background(), bans)
	}
}

// BenchmarkMemory100k reports the heap the publisher holds at 100k bans
// (run with -benchtime 1x).
func BenchmarkMemory100k(b *testing.B) {
	bans := benchBans(100_000, time.Now().Add(24*time.Hour))
	cfg := testConfig()
	cfg.Journal = 0 // the Sync's own journal step is dropped anyway at this size
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		p, err := New(cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		p.Sync(context.Background(), bans)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		runtime.KeepAlive(p)
	}
}

// TestServeForDNSPerf serves 100k bans for scripts/dnsbl-perf: it runs
// only when DNSBL_PERF_LISTEN is set, writes dnsperf's query file to
// DNSBL_PERF_QUERIES, and serves for DNSBL_PERF_SECONDS (default 30).
func TestServeForDNSPerf(t *testing.T) {
	listen := os.Getenv("DNSBL_PERF_LISTEN")
	if listen == "" {
		t.Skip("scripts/dnsbl-perf runs this (DNSBL_PERF_LISTEN unset)")
	}
	secs, _ := strconv.Atoi(os.Getenv("DNSBL_PERF_SECONDS"))
	if secs <= 0 {
		secs = 30
	}
	cfg := testConfig()
	cfg.Listen = listen
	p, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	bans := benchBans(100_000, time.Now().Add(24*time.Hour))
	p.Sync(context.Background(), bans)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(os.Getenv("DNSBL_PERF_QUERIES") + ".tmp")
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for _, n := range benchNames(bans, 200_000, p.zone) {
		fmt.Fprintf(w, "%s A\n", n)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(f.Name(), os.Getenv("DNSBL_PERF_QUERIES")); err != nil {
		t.Fatal(err)
	}
	t.Logf("serving %d bans on %s for %ds", p.Len(), p.Addr(), secs)
	time.Sleep(time.Duration(secs) * time.Second)
}

var _ net.Addr = (*net.UDPAddr)(nil)

// busyRegionBans are n single-address bans inside one IPv6 /48 (an
// attacker banned per address): one region of the zone.
func busyRegionBans(n int, until time.Time) []ban.Ban {
	bans := make([]ban.Ban, n)
	for i := range bans {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::%x", i/256, i%256+1))
		bans[i] = ban.Ban{Prefix: netip.PrefixFrom(a, 128), Detector: "dictionary", Reason: "5 unknown recipients within 10m0s", Until: until}
	}
	return bans
}

// BenchmarkApplyBusyRegion is one Apply into a /48 that holds 20k bans:
// the write lock is held for it, queries wait.
func BenchmarkApplyBusyRegion(b *testing.B) {
	until := time.Now().Add(24 * time.Hour)
	p, err := New(testConfig(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if err := p.Sync(context.Background(), busyRegionBans(20_000, until)); err != nil {
		b.Fatal(err)
	}
	extra := make([]ban.Ban, 4096)
	for i := range extra {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:ffff::%x", i+1))
		extra[i] = ban.Ban{Prefix: netip.PrefixFrom(a, 128), Detector: "dictionary", Reason: "r", Until: until}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x := extra[i%len(extra)]
		x.Until = until.Add(time.Duration(i) * time.Second) // a change every time
		_ = p.Apply(context.Background(), x)
	}
}

// BenchmarkSyncBusyRegion is a Sync of 20k bans in one /48 into an empty
// zone (a start).
func BenchmarkSyncBusyRegion(b *testing.B) {
	bans := busyRegionBans(20_000, time.Now().Add(24*time.Hour))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := New(testConfig(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Sync(context.Background(), bans)
		p.Close()
	}
}
