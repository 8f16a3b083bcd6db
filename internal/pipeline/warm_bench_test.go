//go:build unix

package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/loggen"
	"github.com/mxguard/mxguard/internal/tailer"
)

// BenchmarkWarm is the warm-up at start over a log of a million lines
// (loggen) with the checkpoint at its end: the real tailer reads back
// twice the longest window (2h by default) and the detectors are fed.
// gap is the mean time between lines: 250ms is about 345,000 lines a day
// (the 2h read again are a fraction of the file); at 5ms the million
// lines fit in 2h and are all read again. MB-state is the heap the
// detectors hold afterwards.
//
//	go test ./internal/pipeline -run '^$' -bench Warm -benchtime 3x -benchmem
func BenchmarkWarm(b *testing.B) {
	for _, gap := range []time.Duration{250 * time.Millisecond, 5 * time.Millisecond} {
		b.Run(fmt.Sprintf("lines=1M/gap=%s", gap), func(b *testing.B) {
			dir := b.TempDir()
			logPath := filepath.Join(dir, "mail.log")
			f, err := os.Create(logPath)
			if err != nil {
				b.Fatal(err)
			}
			w := bufio.NewWriter(f)
			if _, err := loggen.Generate(w, loggen.Config{Lines: 1_000_000, Seed: 1, MeanGap: gap,
				Format: loggen.FormatRFC3339, Start: time.Now().Add(-time.Duration(1_000_000) * gap)}); err != nil {
				b.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
			f.Close()
			db, err := bolt.Open(filepath.Join(dir, "mxguard.db"), 0o600, &bolt.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			cp, err := tailer.NewBoltCheckpoints(db)
			if err != nil {
				b.Fatal(err)
			}
			if err := cp.SavePosition(logPath, endOf(b, logPath)); err != nil {
				b.Fatal(err)
			}
			var lines uint64
			var state float64
			b.ResetTimer()
			for range b.N {
				det, err := detectors.New(detectors.DefaultConfig(), nil)
				if err != nil {
					b.Fatal(err)
				}
				p := New(det, nil, nil)
				fol, err := tailer.New(tailer.Config{Paths: []string{logPath}}, cp)
				if err != nil {
					b.Fatal(err)
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				if err := p.Warm(context.Background(), fol, time.UTC); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				state = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (1 << 20)
				lines = p.Stats().Warm.Lines
				runtime.KeepAlive(p)
				b.StartTimer()
			}
			b.ReportMetric(float64(lines), "lines/op")
			b.ReportMetric(state, "MB-state")
		})
	}
}

// endOf is the position at the end of the file path.
func endOf(b *testing.B, path string) tailer.Position {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := f.ReadAt(head, 0)
	return tailer.Position{Dev: uint64(st.Dev), Inode: st.Ino, Offset: fi.Size(), Size: fi.Size(), Head: head[:n]}
}
