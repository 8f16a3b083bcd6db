package report

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/logparse"
)

// chunkSize is how much text one worker parses at a time.
const chunkSize = 1 << 20

type chunk struct {
	buf *[]byte
	ref time.Time // year anchor of the file it came from
}

// maxWorkers caps the default number of parsing workers: each keeps its
// own top-N summaries until the merge (up to ~37 MB each at the default
// capacity with the longest keys, ~13 MB more when the reject warnings'
// clients and HELO names are full too), so memory stays bounded on a
// many-core machine, and parsing is rarely the limit past four cores.
const maxWorkers = 4

// CollectOptions configures Collect.
type CollectOptions struct {
	Loc      *time.Location // zone of BSD stamps; nil: time.Local
	Workers  int            // parsing goroutines; <= 0: GOMAXPROCS, at most maxWorkers
	Progress func(n int64)  // called with raw bytes consumed so far
}

// Collect reads the named logs in order ("-" is stdin; gzip is detected)
// and aggregates them. Lines are parsed by parallel workers; the report
// does not depend on line order. On a read error it returns what it
// aggregated so far together with an error that names the file.
func Collect(paths []string, stdin io.Reader, opts Options, co CollectOptions) (*Aggregator, error) {
	workers := co.Workers
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), maxWorkers)
	}
	pool := sync.Pool{New: func() any { b := make([]byte, 0, chunkSize+logparse.MaxLineLength); return &b }}
	work := make(chan chunk, workers*2)
	aggs := make([]*Aggregator, workers)
	var wg sync.WaitGroup
	for i := range aggs {
		aggs[i] = NewAggregator(opts)
		wg.Add(1)
		go func(a *Aggregator) {
			defer wg.Done()
			p := logparse.NewParser(co.Loc, time.Time{})
			var ev event.Event
			for c := range work {
				p.Ref = c.ref
				// chunks come in any order: what a process did in
				// this worker's last chunk is not its state now
				p.ForgetSessions()
				parseChunk(*c.buf, p, &ev, a)
				*c.buf = (*c.buf)[:0]
				pool.Put(c.buf)
			}
		}(aggs[i])
	}

	var readErr error
	var consumed int64
	tooLong := int64(0)
	for _, path := range paths {
		n, tl, err := splitFile(path, stdin, &pool, work, func(done int64) {
			if co.Progress != nil {
				co.Progress(consumed + done)
			}
		})
		consumed += n
		tooLong += tl
		if err != nil {
			readErr = err
			break
		}
	}
	close(work)
	wg.Wait()
	for _, b := range aggs[1:] {
		aggs[0].Merge(b)
	}
	aggs[0].AddTooLong(tooLong)
	return aggs[0], readErr
}

// splitFile reads one input and sends newline-aligned chunks to work. It
// returns the raw bytes consumed and the number of lines skipped as too long.
func splitFile(path string, stdin io.Reader, pool *sync.Pool, work chan<- chunk, progress func(int64)) (int64, int64, error) {
	in, err := logparse.Open(path, stdin)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	ref := in.ModTime
	if ref.IsZero() {
		ref = time.Now()
	}
	r := in.Reader()
	var tooLong int64
	var carry []byte // partial last line of the previous read
	skipping := false
	for {
		bp := pool.Get().(*[]byte)
		buf := append((*bp)[:0], carry...)
		n, rerr := io.ReadAtLeast(r, buf[len(buf):chunkSize], 1)
		buf = buf[:len(buf)+n]
		if skipping {
			// drop the rest of an overlong line
			if i := bytes.IndexByte(buf, '\n'); i >= 0 {
				buf = append(buf[:0], buf[i+1:]...)
				skipping = false
			} else {
				buf = buf[:0]
			}
		}
		last := bytes.LastIndexByte(buf, '\n')
		final := rerr != nil
		switch {
		case final:
			carry = nil
		case last < 0 && len(buf) >= chunkSize-1:
			// no newline in a whole chunk: one overlong line
			tooLong++
			skipping = true
			buf = buf[:0]
			carry = nil
		case last < 0:
			carry = append(carry[:0], buf...)
			buf = buf[:0]
		default:
			carry = append(carry[:0], buf[last+1:]...)
			buf = buf[:last+1]
		}
		if len(buf) > 0 {
			*bp = buf
			work <- chunk{buf: bp, ref: ref}
		} else {
			pool.Put(bp)
		}
		progress(in.Consumed())
		if final {
			if rerr == io.EOF {
				return in.Consumed(), tooLong, nil
			}
			return in.Consumed(), tooLong, fmt.Errorf("%s: %w", path, rerr)
		}
	}
}

// parseChunk parses every line of buf into a.
func parseChunk(buf []byte, p *logparse.Parser, ev *event.Event, a *Aggregator) {
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		var line []byte
		if i < 0 {
			line, buf = buf, nil
		} else {
			line, buf = buf[:i], buf[i+1:]
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			continue
		}
		if len(line) > logparse.MaxLineLength {
			a.AddTooLong(1)
			continue
		}
		// The chunk is not modified while its lines are parsed; the
		// aggregator copies what it keeps.
		err := p.ParseInto(unsafe.String(unsafe.SliceData(line), len(line)), ev)
		a.Add(ev, err)
	}
}
