package logparse

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"

	"github.com/mxguard/mxguard/internal/journal"
)

// MaxLineLength bounds a line; longer lines (junk, a runaway process) are
// skipped whole and counted, so memory stays bounded.
const MaxLineLength = 64 << 10

// Input is one opened log: a plain file, a gzip file (detected by its
// magic bytes, whatever its name) or standard input; when its first byte
// is "{" it is read as `journalctl --output=json` output, each entry
// rendered as an RFC 3339 syslog line (journal.JSONReader).
type Input struct {
	Name    string    // path, or "-" for stdin
	ModTime time.Time // for year inference; zero for stdin
	Size    int64     // compressed size on disk; 0 for stdin
	r       io.Reader
	closers []io.Closer
	counter *countingReader
}

// Open opens path ("-" is stdin) and transparently decompresses gzip.
func Open(path string, stdin io.Reader) (*Input, error) {
	in := &Input{Name: path}
	var raw io.Reader
	if path == "-" {
		raw = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err // *PathError names the file
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if st.IsDir() {
			f.Close()
			return nil, fmt.Errorf("open %s: is a directory", path)
		}
		in.ModTime, in.Size = st.ModTime(), st.Size()
		in.closers = append(in.closers, f)
		raw = f
	}
	in.counter = &countingReader{r: raw}
	br := bufio.NewReaderSize(in.counter, 256<<10)
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			in.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		zr.Multistream(true)
		in.closers = append(in.closers, zr)
		in.r = zr
	} else {
		in.r = br
	}
	// journalctl --output=json: one JSON object per line, made into the
	// syslog lines Postfix writes to a file.
	jb, ok := in.r.(*bufio.Reader)
	if !ok {
		jb = bufio.NewReaderSize(in.r, MaxLineLength)
		in.r = jb
	}
	if isJSONStart(jb) {
		in.r = journal.NewJSONReader(jb)
	}
	return in, nil
}

// isJSONStart tells whether the stream starts with a JSON object.
func isJSONStart(r *bufio.Reader) bool {
	b, _ := r.Peek(1)
	return len(b) == 1 && b[0] == '{'
}

// Consumed returns how many raw (possibly compressed) bytes were read.
func (in *Input) Consumed() int64 { return in.counter.n }

// Close closes the file (not stdin).
func (in *Input) Close() error {
	var errs []error
	for i := len(in.closers) - 1; i >= 0; i-- {
		errs = append(errs, in.closers[i].Close())
	}
	return errors.Join(errs...)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// LineStats counts what a scan saw.
type LineStats struct {
	Lines   int64 // lines read, including skipped ones
	TooLong int64 // lines over MaxLineLength, skipped whole
}

// ScanLines calls fn for every line of r (without "\n" or "\r\n").
//
// The string passed to fn aliases an internal buffer and is valid only
// until fn returns: clone what you keep. Lines longer than MaxLineLength
// are skipped and counted; a last line without "\n" is still delivered.
// The error is the reader's (nil at EOF) or fn's.
func ScanLines(r io.Reader, st *LineStats, fn func(line string) error) error {
	br, ok := r.(*bufio.Reader)
	if !ok || br.Size() < MaxLineLength {
		br = bufio.NewReaderSize(r, MaxLineLength)
	}
	skipping := false
	for {
		b, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if !skipping {
				skipping = true
				st.TooLong++
				st.Lines++
			}
			continue
		}
		if skipping {
			skipping = false
			if err != nil {
				return eofNil(err)
			}
			continue
		}
		if len(b) > 0 {
			st.Lines++
			b = bytes.TrimSuffix(b, []byte{'\n'})
			b = bytes.TrimSuffix(b, []byte{'\r'})
			// The line is only read during fn; it is never written to.
			if ferr := fn(unsafe.String(unsafe.SliceData(b), len(b))); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			return eofNil(err)
		}
	}
}

func eofNil(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}

// Reader returns the decompressed stream.
func (in *Input) Reader() io.Reader { return in.r }
