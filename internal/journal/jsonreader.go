package journal

import (
	"bufio"
	"bytes"
	"io"
)

// JSONReader turns `journalctl --output=json` output into syslog lines
// (Entry.Line); lines that are not journal entries pass unchanged, so a
// stream may mix both. It filters nothing: select with journalctl's own
// matches.
type JSONReader struct {
	r      *bufio.Reader
	buf    []byte // converted, not yet read
	err    error
	filter *Filter // when set, entries it does not match are dropped
}

// NewJSONReader reads the JSON lines of r.
func NewJSONReader(r io.Reader) *JSONReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &JSONReader{r: br}
}

func (j *JSONReader) Read(p []byte) (int, error) {
	for len(j.buf) == 0 {
		if j.err != nil {
			return 0, j.err
		}
		line, err := j.r.ReadBytes('\n')
		j.err = err
		if len(line) == 0 {
			continue
		}
		if body := bytes.TrimRight(line, "\r\n"); len(body) > 0 && body[0] == '{' {
			if e, perr := ParseEntry(body); perr == nil {
				if j.filter != nil && !j.filter.Match(e.Identifier) {
					continue
				}
				line = append([]byte(e.Line()), '\n')
			}
		}
		j.buf = line
	}
	n := copy(p, j.buf)
	j.buf = j.buf[n:]
	return n, nil
}
