package policy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/internal/testclock"
)

// benchBans makes a Manager over an in-memory store holding n bans
// (10.x.y.z/32): the index the daemon's policy service asks.
func benchBans(b *testing.B, n int) *ban.Manager {
	b.Helper()
	st := store.NewMemory()
	now := time.Now()
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		if err := st.Put(store.Record{Prefix: p, Detector: "dictionary", Reason: "5 unknown recipients", Evidence: 5,
			FirstSeen: now, LastSeen: now, Since: now, Until: now.Add(24 * time.Hour), Offence: 1}); err != nil {
			b.Fatal(err)
		}
	}
	m, err := ban.NewManager(ban.ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}}, st, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// fillGreylist records n passed triplets (one per /24 of 172.16.0.0/12
// and 100.64.0.0/10), concurrently so that bbolt's Batch groups them.
func fillGreylist(b *testing.B, s *Server, clk *testclock.Clock, n int) {
	b.Helper()
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), 1}) }
	run := func(first bool) {
		var wg sync.WaitGroup
		for w := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 64 {
					v, err := s.grey.Check(ip(i), fmt.Sprintf("s%d@x.example", i), "r@y.example")
					if err == nil && v.Retry != nil {
						s.grey.Commit(v.Retry, false)
					}
					if err != nil || first == v.Pass {
						b.Errorf("fill %d: %+v %v", i, v, err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	run(true)
	clk.Add(6 * time.Minute)
	run(false)
}

// benchConns runs b.N requests over conns unix connections (like conns
// smtpd processes) and reports requests/s and the p50 and p99 latency.
func benchConns(b *testing.B, path string, conns int, makeReq func(conn, i int) string, want string) {
	b.Helper()
	type cl struct {
		c  net.Conn
		br *bufio.Reader
	}
	cls := make([]cl, conns)
	for i := range cls {
		c, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		cls[i] = cl{c, bufio.NewReader(c)}
	}
	lat := make([][]time.Duration, conns)
	// the requests are made before the clock starts: the client's cost
	// is not the server's
	const pool = 512
	reqs := make([][][]byte, conns)
	for k := range reqs {
		for i := range pool {
			reqs[k] = append(reqs[k], []byte(makeReq(k, i)))
		}
	}
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for k := range conns {
		n := b.N / conns
		if k < b.N%conns {
			n++
		}
		lat[k] = make([]time.Duration, 0, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cls[k]
			for i := range n {
				start := time.Now()
				if _, err := c.c.Write(reqs[k][i%pool]); err != nil {
					b.Error(err)
					return
				}
				line, err := c.br.ReadSlice('\n')
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := c.br.ReadSlice('\n'); err != nil {
					b.Error(err)
					return
				}
				lat[k] = append(lat[k], time.Since(start))
				if !strings.HasPrefix(string(line[7:]), want) {
					b.Errorf("reply %q, want %q", line, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkPolicy: answers over a unix socket from 16 connections at once
// (4 for blocklist-4conns),
// with 100k bans in the index (and, for greylist, 100k passed triplets).
//
//	go test ./internal/policy -run '^$' -bench BenchmarkPolicy -benchtime 200000x
func BenchmarkPolicy(b *testing.B) {
	const conns = 16
	mgr := benchBans(b, 100000)
	b.Run("blocklist", func(b *testing.B) {
		cfg := testConfig(b)
		_, path := start(b, cfg, Deps{Blocklist: mgr, Logger: testLogger(b)})
		benchConns(b, path, conns, func(k, i int) string {
			j := (k*7919 + i) % 100000
			return req("client_address", netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)}).String())
		}, "REJECT mxguard: client")
	})
	b.Run("blocklist-4conns", func(b *testing.B) {
		cfg := testConfig(b)
		_, path := start(b, cfg, Deps{Blocklist: mgr, Logger: testLogger(b)})
		benchConns(b, path, 4, func(k, i int) string {
			j := (k*7919 + i) % 100000
			return req("client_address", netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)}).String())
		}, "REJECT mxguard: client")
	})
	b.Run("dunno", func(b *testing.B) {
		cfg := testConfig(b)
		_, path := start(b, cfg, Deps{Blocklist: mgr, Logger: testLogger(b)})
		benchConns(b, path, conns, func(k, i int) string {
			return req("client_address", "192.0.2."+strconv.Itoa(i%250+1))
		}, "DUNNO")
	})
	b.Run("greylist-passed", func(b *testing.B) {
		clk := testclock.New()
		cfg := testConfig(b)
		cfg.Greylist.Enabled, cfg.Greylist.DB = true, filepath.Join(b.TempDir(), "g.db")
		cfg.Greylist.AutoAllowlist = 0 // each answer looks up its triplet
		s, path := start(b, cfg, Deps{Blocklist: mgr, Logger: testLogger(b), Now: clk.Now})
		fillGreylist(b, s, clk, 100000)
		for _, n := range []int{conns, 4} {
			b.Run(strconv.Itoa(n)+"conns", func(b *testing.B) {
				benchConns(b, path, n, func(k, i int) string {
					j := (k*7919 + i) % 100000
					return req("client_address", netip.AddrFrom4([4]byte{100, 64 + byte(j>>16), byte(j >> 8), 9}).String(),
						"sender", "s"+strconv.Itoa(j)+"@x.example", "recipient", "r@y.example")
				}, "DUNNO")
			})
		}
	})
	b.Run("greylist-new", func(b *testing.B) {
		clk := testclock.New()
		cfg := testConfig(b)
		cfg.Greylist.Enabled, cfg.Greylist.DB = true, filepath.Join(b.TempDir(), "g.db")
		_, path := start(b, cfg, Deps{Blocklist: mgr, Logger: testLogger(b), Now: clk.Now})
		benchConns(b, path, conns, func(k, i int) string {
			return req("client_address", fmt.Sprintf("172.16.%d.%d", k, i%250+1), "sender", fmt.Sprintf("n%d-%d@x.example", k, i))
		}, "DEFER_IF_PERMIT mxguard: Greylisted")
	})
}

// BenchmarkDecide is the server's work per request without the socket:
// parse and decide (block list hit with 100k bans; a clean client).
func BenchmarkDecide(b *testing.B) {
	mgr := benchBans(b, 100000)
	s, err := New(testConfig(b), Deps{Blocklist: mgr})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct{ name, ip, want string }{
		{"blocklist", "10.0.1.2", "REJECT"}, {"dunno", "192.0.2.1", "DUNNO"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			raw := []byte(req("client_address", tc.ip))
			rd := &repeatReader{b: raw}
			br := bufio.NewReaderSize(rd, 4096)
			cs := &connState{req: request{buf: make([]byte, 0, 1024)}}
			b.ReportAllocs()
			for b.Loop() {
				if err := readRequest(br, &cs.req, s.lim, nil); err != nil {
					b.Fatal(err)
				}
				if a := s.decide(cs, &cs.req); !strings.HasPrefix(a, tc.want) {
					b.Fatal(a)
				}
			}
		})
	}
}

// repeatReader yields b over and over.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

// BenchmarkPolicyMemory reports the heap and RSS of a process holding
// 100k bans in the Manager's index and 100k greylist triplets (the
// greylist lives in its bbolt file: mapped, not heap).
//
//	go test ./internal/policy -run '^$' -bench BenchmarkPolicyMemory -benchtime 1x
func BenchmarkPolicyMemory(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	mgr := benchBans(b, 100000)
	afterBans := heap()
	clk := testclock.New()
	cfg := testConfig(b)
	cfg.Greylist.Enabled, cfg.Greylist.DB = true, filepath.Join(b.TempDir(), "g.db")
	s, path := start(b, cfg, Deps{Blocklist: mgr, Logger: testLogger(b), Now: clk.Now})
	fillGreylist(b, s, clk, 100000)
	afterGrey := heap()
	for b.Loop() {
		c, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		io.WriteString(c, req("client_address", "10.0.0.1"))
		bufio.NewReader(c).ReadString('\n')
		c.Close()
	}
	b.ReportMetric(float64(afterBans-before)/(1<<20), "bans-heap-MiB")
	b.ReportMetric(float64(afterGrey-afterBans)/(1<<20), "greylist-heap-MiB")
	b.ReportMetric(float64(rssKiB())/1024, "RSS-MiB")
	if fi, err := os.Stat(cfg.Greylist.DB); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "greylist-file-MiB")
	}
}

// rssKiB is VmRSS of this process (0 if unknown).
func rssKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}
