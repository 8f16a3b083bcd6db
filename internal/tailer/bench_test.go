package tailer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchFollower runs a follower on path and returns its line channel and a
// stop function.
func benchFollower(b *testing.B, path string, poll bool) (*Follower, chan Line, func()) {
	b.Helper()
	f, err := New(Config{Paths: []string{path}, FromStart: true, Poll: poll}, newMemCP())
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan Line, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, out) }()
	return f, out, func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkThroughput appends b.N lines (in writes of batch lines) while a
// follower consumes and acknowledges them. Run with -benchtime=1000000x.
func BenchmarkThroughput(b *testing.B) {
	old := recheckEvery
	recheckEvery = 250 * time.Millisecond
	defer func() { recheckEvery = old }()
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "mail.log")
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			f, out, stop := benchFollower(b, path, false)
			defer stop()
			line := lineText(1) + "\n"
			chunk := []byte(strings.Repeat(line, batch))
			b.SetBytes(int64(len(line)))
			b.ResetTimer()
			start := time.Now()
			werr := make(chan error, 1)
			total := b.N
			go func() {
				for i := 0; i < total; i += batch {
					n := min(batch, total-i)
					if _, err := w.Write(chunk[:n*len(line)]); err != nil {
						werr <- err
						return
					}
				}
				werr <- nil
			}()
			for range b.N {
				f.Ack(<-out)
			}
			el := time.Since(start)
			b.StopTimer()
			if err := <-werr; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "lines/s")
		})
	}
}

// BenchmarkLatency appends one timestamped line every interval and measures
// the delay from before the write to the consumer receiving it. In inotify
// mode the timer fallback is disabled, so this measures the inotify
// notification path alone. Run with -benchtime=2000x.
func BenchmarkLatency(b *testing.B) {
	for _, tc := range []struct {
		name    string
		poll    bool
		recheck time.Duration
	}{
		{"inotify", false, time.Hour},
		{"poll", true, 250 * time.Millisecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			old := recheckEvery
			recheckEvery = tc.recheck
			defer func() { recheckEvery = old }()
			path := filepath.Join(b.TempDir(), "mail.log")
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			f, out, stop := benchFollower(b, path, tc.poll)
			defer stop()
			time.Sleep(50 * time.Millisecond) // let the watcher start
			interval := time.Millisecond
			if tc.poll {
				interval = 10 * time.Millisecond
			}
			delays := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			werr := make(chan error, 1)
			total := b.N
			go func() {
				for range total {
					s := strconv.FormatInt(time.Now().UnixNano(), 10) + " postfix/smtpd[123]: connect from unknown[192.0.2.1]\n"
					if _, err := w.WriteString(s); err != nil {
						werr <- err
						return
					}
					time.Sleep(interval)
				}
				werr <- nil
			}()
			for range b.N {
				l := <-out
				now := time.Now()
				ts, err := strconv.ParseInt(l.Text[:strings.IndexByte(l.Text, ' ')], 10, 64)
				if err != nil {
					b.Fatal(err)
				}
				delays = append(delays, now.Sub(time.Unix(0, ts)))
				f.Ack(l)
			}
			b.StopTimer()
			if err := <-werr; err != nil {
				b.Fatal(err)
			}
			slices.Sort(delays)
			q := func(p float64) float64 {
				return float64(delays[int(p*float64(len(delays)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
		})
	}
}
