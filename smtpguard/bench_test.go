package smtpguard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// vmRSS returns the process's resident set size in bytes.
func vmRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkGreetPauseHold holds N clients in the greet pause at once
// (default 2000; GUARD_HOLD_N=10000 with `ulimit -n 30000` for more) and
// reports the resident memory per held connection (client sockets are in
// the same process and included).
func BenchmarkGreetPauseHold(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("GUARD_HOLD_N")); err == nil && v > 0 {
		n = v
	}
	h := newHarness(b, func(c *Config) {
		c.GreetPause = Duration(time.Minute)
		c.GreetTeaser = true
		c.Limits.MaxConnections = n + 10
		c.Limits.MaxConnectionsPerClient = n + 10
		c.Limits.StressThreshold = 0 // the full pause for all: holding them is what is measured
	})
	for b.Loop() {
		runtime.GC()
		rss0, g0 := vmRSS(), runtime.NumGoroutine()
		conns := make([]net.Conn, 0, n)
		start := time.Now()
		for i := range n {
			// spread over 127.0.0.0/8 sources so that ephemeral ports last
			src := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i>>8), byte(i))}
			c, err := (&net.Dialer{LocalAddr: src}).Dial("tcp", h.addr)
			if err != nil {
				b.Fatalf("dial %d: %v (raise ulimit -n)", i, err)
			}
			conns = append(conns, c)
		}
		for h.g.Stats().InPause < int64(n) {
			if time.Since(start) > 50*time.Second {
				b.Fatalf("only %d of %d in the pause", h.g.Stats().InPause, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		held := time.Since(start)
		runtime.GC()
		rss1, g1 := vmRSS(), runtime.NumGoroutine()
		b.ReportMetric(float64(n), "held")
		b.ReportMetric(float64(rss1-rss0)/float64(n), "RSS-bytes/conn")
		b.ReportMetric(float64(rss1)/(1<<20), "RSS-MB")
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/conn")
		b.ReportMetric(held.Seconds()*1e3, "ms-to-hold-all")
		for _, c := range conns {
			c.Close()
		}
		for h.g.Stats().Active > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// session runs one whole SMTP session (EHLO, MAIL, RCPT, DATA, QUIT)
// against addr, waiting for each reply.
func benchSession(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	read := func(want string) error {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if len(l) >= 4 && l[3] == '-' {
				continue
			}
			if !strings.HasPrefix(l, want) {
				return fmt.Errorf("got %q, want %s", l, want)
			}
			return nil
		}
	}
	steps := []struct{ send, want string }{
		{"", "220"},
		{"EHLO bench.example.org\r\n", "250"},
		{"MAIL FROM:<bench@example.net>\r\n", "250"},
		{"RCPT TO:<alice@example.com>\r\n", "250"},
		{"DATA\r\n", "354"},
		{testWire + ".\r\n", "250"},
		{"QUIT\r\n", "221"},
	}
	for _, s := range steps {
		if s.send != "" {
			if _, err := io.WriteString(c, s.send); err != nil {
				return err
			}
		}
		if err := read(s.want); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkSession compares whole sessions sent directly to the upstream
// with sessions through the guard (greet pause 0). The difference per op
// is the latency the guard adds per session. GUARD_BENCH_UPSTREAM=host:port
// benchmarks against a real Postfix (its XCLIENT listener) instead of the
// fake upstream.
func BenchmarkSession(b *testing.B) {
	h := newHarness(b, func(c *Config) {
		if u := os.Getenv("GUARD_BENCH_UPSTREAM"); u != "" {
			c.Upstream = u
		}
		c.Limits.MaxConnectionsPerClient = 0
	})
	for _, tc := range []struct{ name, addr string }{
		{"direct", h.g.cfg.Upstream},
		{"guard", h.addr},
	} {
		b.Run(tc.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				if err := benchSession(tc.addr); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
		b.Run(tc.name+"-parallel", func(b *testing.B) {
			b.SetParallelism(8)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := benchSession(tc.addr); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// benchClients is the list of parallel client counts for BenchmarkLoad
// (GUARD_BENCH_CLIENTS="8,32"; default 8 and 32).
func benchClients() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("GUARD_BENCH_CLIENTS"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []int{8, 32}
	}
	return out
}

// BenchmarkLoad measures message throughput with N clients in parallel,
// each running whole sessions (one message each) back to back, straight
// to the upstream ("direct") and through the guard ("guard"); direct and
// guard alternate for each N so that both see the same machine. With
// GUARD_BENCH_UPSTREAM=host:port the upstream is a real Postfix (its
// XCLIENT listener, see testdata/smtpguard/postfix-up.sh), else the fake
// upstream. Compare msgs/s of the pairs; run with -count 3. Each run is
// bounded by b.N sessions (-benchtime Nx) and by a 60 s deadline.
func BenchmarkLoad(b *testing.B) {
	h := newHarness(b, func(c *Config) {
		if u := os.Getenv("GUARD_BENCH_UPSTREAM"); u != "" {
			c.Upstream = u
		}
		c.Limits.MaxConnectionsPerClient = 0
	})
	for _, n := range benchClients() {
		for _, tc := range []struct{ name, addr string }{
			{"direct", h.g.cfg.Upstream},
			{"guard", h.addr},
		} {
			b.Run(fmt.Sprintf("%s/c%d", tc.name, n), func(b *testing.B) {
				loadRun(b, n, func() error { return benchSession(tc.addr) })
			})
		}
	}
	goodClients(b, h.g)
}

// goodClients fails if good clients got an error reply from the guard
// (the error limits are for bad ones).
func goodClients(b *testing.B, g *Guard) {
	if st := g.Stats(); st.Rejects != 0 || st.TooManyErrors != 0 || st.Timeouts != 0 {
		b.Errorf("good clients refused: %+v", st)
	}
}

// loadRun runs b.N calls of one over n goroutines and reports msgs/s.
func loadRun(b *testing.B, n int, one func() error) {
	var next, failed atomic.Int64
	deadline := time.Now().Add(60 * time.Second)
	total := int64(b.N)
	cpu0 := processCPU()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for next.Add(1) <= total && time.Now().Before(deadline) {
				if err := one(); err != nil {
					if failed.Add(1) == 1 {
						b.Error(err)
					}
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	done := min(next.Load(), total)
	b.ReportMetric(float64(done)/el.Seconds(), "msgs/s")
	if done > 0 {
		b.ReportMetric((processCPU()-cpu0).Seconds()*1e3/float64(done), "cpu-ms/msg")
	}
	b.ReportMetric(0, "ns/op")
}

// processCPU is the user+system CPU time of this process so far: the
// clients, and the guard when it is in the path (the upstream is another
// process with GUARD_BENCH_UPSTREAM). guard minus direct is the guard's
// CPU per message.
func processCPU() time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// BenchmarkSMTPSource is BenchmarkLoad with Postfix's own load generator
// smtp-source (-s N sessions in parallel, -m b.N messages of 1 KiB, one
// per session) as the client. It needs GUARD_BENCH_UPSTREAM (a real
// Postfix) and smtp-source in PATH (Debian: package postfix).
func BenchmarkSMTPSource(b *testing.B) {
	up := os.Getenv("GUARD_BENCH_UPSTREAM")
	bin, err := exec.LookPath("smtp-source")
	if up == "" || err != nil {
		b.Skip("needs GUARD_BENCH_UPSTREAM and smtp-source")
	}
	h := newHarness(b, func(c *Config) {
		c.Upstream = up
		c.Limits.MaxConnectionsPerClient = 0
	})
	for _, n := range benchClients() {
		for _, tc := range []struct{ name, addr string }{
			{"direct", up},
			{"guard", h.addr},
		} {
			b.Run(fmt.Sprintf("%s/c%d", tc.name, n), func(b *testing.B) {
				m := max(b.N, n)
				ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, "-s", strconv.Itoa(n), "-m", strconv.Itoa(m), "-l", "1024",
					"-M", "bench.example.org", "-f", "bench@example.net", "-t", "alice@example.com", tc.addr)
				b.ResetTimer()
				cpu0 := processCPU()
				start := time.Now()
				out, err := cmd.CombinedOutput()
				el := time.Since(start)
				if err != nil {
					b.Fatalf("smtp-source: %v\n%s", err, out)
				}
				b.ReportMetric(float64(m)/el.Seconds(), "msgs/s")
				// the client and the upstream are other processes: this is
				// the guard's own CPU per message (direct: ~0)
				b.ReportMetric((processCPU()-cpu0).Seconds()*1e3/float64(m), "guard-cpu-ms/msg")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
	goodClients(b, h.g)
}
