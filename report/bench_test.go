package report

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/loggen"
)

// BenchmarkCollect measures the whole report pipeline (read, split, parse
// on every core, aggregate, merge) over a generated 500k-line log.
func BenchmarkCollect(b *testing.B) {
	const lines = 500000
	path := filepath.Join(b.TempDir(), "mail.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	st, err := loggen.Generate(f, loggen.Config{Lines: lines, Seed: 1})
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Bytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		agg, err := Collect([]string{path}, nil, Options{}, CollectOptions{Loc: time.UTC})
		if err != nil {
			b.Fatal(err)
		}
		agg.Result(time.UTC)
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkCollectDistinct is the worst case for memory: every line has
// its own client, HELO, sender and recipient or text, so every top section
// overflows its capacity and keeps shrinking.
func BenchmarkCollectDistinct(b *testing.B) {
	const lines = 500000
	path := filepath.Join(b.TempDir(), "mail.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	err = writeDistinctLog(w, lines)
	if err == nil {
		err = w.Flush()
	}
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		agg, err := Collect([]string{path}, nil, Options{}, CollectOptions{Loc: time.UTC})
		if err != nil {
			b.Fatal(err)
		}
		agg.Result(time.UTC)
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
