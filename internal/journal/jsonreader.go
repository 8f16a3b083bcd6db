package journal

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// JSONReader turns `journalctl --output=json` output into syslog lines
// (Entry.Line); lines that are not journal entries pass unchanged, so a
// stream may mix both. It filters nothing: select with journalctl's own
// matches.
type JSONReader struct {
	r      *bufio.Reader
	buf    []byte // converted, not yet read (in store)
	store  []byte
	err    error
	filter *Filter // when set, entries it does not match are dropped
	long   bool    // in the middle of a line longer than the buffer
}

// maxEntry bounds the JSON line of one entry (the reader's buffer).
const maxEntry = 256 << 10

// NewJSONReader reads the JSON lines of r.
func NewJSONReader(r io.Reader) *JSONReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, maxEntry)
	}
	return &JSONReader{r: br}
}

func (j *JSONReader) Read(p []byte) (int, error) {
	for len(j.buf) == 0 {
		if j.err != nil {
			return 0, j.err
		}
		line, err := j.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || j.long {
			// Longer than the buffer: no journal entry of Postfix's is.
			// Passed on as it comes, a slice at a time, so the reader
			// behind counts one line too long and memory stays bounded.
			j.long = errors.Is(err, bufio.ErrBufferFull)
			j.store = append(j.store[:0], line...)
			j.buf = j.store
			if !j.long {
				j.err = err
			}
			continue
		}
		j.err = err
		if len(line) == 0 {
			continue
		}
		if body := bytes.TrimRight(line, "\r\n"); len(body) > 0 && body[0] == '{' {
			if e, perr := ParseEntry(body); perr == nil {
				if j.filter != nil && !j.filter.Match(e.Identifier) {
					continue
				}
				j.store = append(append(j.store[:0], e.Line()...), '\n')
				j.buf = j.store
				continue
			}
		}
		j.store = append(j.store[:0], line...)
		j.buf = j.store
	}
	n := copy(p, j.buf)
	j.buf = j.buf[n:]
	return n, nil
}
