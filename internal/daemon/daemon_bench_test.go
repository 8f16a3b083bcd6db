package daemon

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/loggen"
)

// BenchmarkDaemonLatency measures, in a running daemon (real file, real
// tailer, bbolt store with fsync), the time from appending the 5th line of
// a dictionary attack to the ban being decided and stored.
//
//	go test -run '^$' -bench DaemonLatency -benchtime 200x ./internal/daemon/
func BenchmarkDaemonLatency(b *testing.B) {
	cfg := newTestConfig(b)
	cfg.LogLevel = "warn"
	td := startDaemon(b, cfg, "")
	decided := make(chan time.Time, 16)
	td.d.pipe.SetHook(func(d detectors.Decision, _ ban.Ban, banned bool, err error) {
		if banned && err == nil {
			decided <- time.Now()
		}
	})
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		ip := fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)
		var first []string
		for j := range 4 {
			first = append(first, dictLine(ip, j))
		}
		want := td.d.pipe.Stats().Lines + 4
		appendLines(b, td.log, first...)
		waitFor(b, "4 lines", 5*time.Second, func() bool { return td.d.pipe.Stats().Lines >= want })
		start := time.Now()
		appendLines(b, td.log, dictLine(ip, 4))
		select {
		case t := <-decided:
			lat = append(lat, t.Sub(start))
		case <-time.After(5 * time.Second):
			b.Fatal("no decision within 5s")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkDaemonThroughput appends a generated realistic log (loggen,
// stamps ending now, so bans are live and written to bbolt) to the followed
// file and measures lines/s until the daemon has processed all of it.
//
//	go test -run '^$' -bench DaemonThroughput -benchtime 3x ./internal/daemon/
//
// The dry_run variant shows the pipeline without bbolt writes (one fsync
// per ban dominates the other).
func BenchmarkDaemonThroughput(b *testing.B) {
	for _, dry := range []bool{false, true} {
		b.Run(fmt.Sprintf("dry_run=%v", dry), func(b *testing.B) { benchThroughput(b, dry) })
	}
}

func benchThroughput(b *testing.B, dryRun bool) {
	const n = 200000
	var buf bytes.Buffer
	gap := 5 * time.Millisecond
	if _, err := loggen.Generate(&buf, loggen.Config{Lines: n, Seed: 7, MeanGap: gap,
		Start: time.Now().Add(-time.Duration(n) * gap)}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	var total time.Duration
	for range b.N {
		b.StopTimer()
		cfg := newTestConfig(b)
		cfg.LogLevel = "warn"
		cfg.DryRun = dryRun
		td := startDaemon(b, cfg, "")
		f, err := os.OpenFile(td.log, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for off := 0; off < len(data); off += 1 << 20 {
			if _, err := f.Write(data[off:min(off+1<<20, len(data))]); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
		waitFor(b, "all lines", 120*time.Second, func() bool { return td.d.pipe.Stats().Lines >= n })
		total += time.Since(start)
		b.StopTimer()
		st := td.d.pipe.Stats()
		b.ReportMetric(float64(st.Events), "events")
		var nd uint64
		for _, v := range st.Decisions {
			nd += v
		}
		b.ReportMetric(float64(nd), "decisions")
		td.stop(b)
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "lines/s")
}
