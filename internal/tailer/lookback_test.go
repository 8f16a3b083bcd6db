package tailer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLines appends the numbered lines [from, to) to path.
func writeLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i < to; i++ {
		if _, err := f.WriteString(lineText(i) + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

// checkpointAt is the position just after the line numbered n of path.
func checkpointAt(t *testing.T, path string, n int) Position {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(lineText(n)+"\n"))
	if i < 0 {
		t.Fatalf("line %d not in %s", n, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	dev, ino := fileID(fi)
	return Position{Dev: dev, Inode: ino, Offset: int64(i + len(lineText(n)) + 1), Size: fi.Size(), Head: b[:min(len(b), headLen)]}
}

// The lines before a checkpoint are read again back to the first line
// older than needed, across rotation and compression, oldest first.
func TestLookback(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, path string) Position
		olderThan int // lines numbered below it are older than needed
		first     int // first line wanted again
		last      int // the checkpoint's line
	}{
		{"live file", func(t *testing.T, path string) Position {
			writeLines(t, path, 0, 100)
			return checkpointAt(t, path, 79)
		}, 50, 50, 79},
		{"back into the compressed file rotated before", func(t *testing.T, path string) Position {
			writeLines(t, path, 0, 50)
			rotateNumbered(t, path, false)
			writeLines(t, path, 50, 100)
			return checkpointAt(t, path, 79)
		}, 30, 30, 79},
		{"the checkpoint's file rotated since", func(t *testing.T, path string) Position {
			writeLines(t, path, 0, 80)
			sp := checkpointAt(t, path, 79)
			rotateNumbered(t, path, true)
			writeLines(t, path, 80, 100)
			return sp
		}, 60, 60, 79},
		{"the checkpoint's file compressed since", func(t *testing.T, path string) Position {
			writeLines(t, path, 0, 40)
			rotateNumbered(t, path, false)
			writeLines(t, path, 40, 80)
			sp := checkpointAt(t, path, 70)
			rotateNumbered(t, path, false)
			writeLines(t, path, 80, 100)
			return sp
		}, 20, 20, 70},
		{"nothing old enough: from the oldest file", func(t *testing.T, path string) Position {
			writeLines(t, path, 0, 10)
			rotateNumbered(t, path, true)
			writeLines(t, path, 10, 30)
			return checkpointAt(t, path, 25)
		}, -1, 0, 25},
		{"the first line is the older one", func(t *testing.T, path string) Position {
			writeLines(t, path, 0, 30)
			return checkpointAt(t, path, 25)
		}, 1, 1, 25},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.log")
			sp := tc.setup(t, path)
			sp.Partial = 2
			cp := newMemCP()
			if err := cp.SavePosition(path, sp); err != nil {
				t.Fatal(err)
			}
			f, err := New(Config{Paths: []string{path}, Logger: testLogger(t)}, cp)
			if err != nil {
				t.Fatal(err)
			}
			var got []Line
			seen := 0
			err = f.Lookback(context.Background(), func(p, line string) bool {
				if p != path {
					t.Errorf("older got path %q", p)
				}
				if seen == 0 && lineNum(t, line) != tc.last {
					t.Errorf("older was first asked about %q, want the checkpoint's line %d", line, tc.last)
				}
				seen++
				return lineNum(t, line) < tc.olderThan
			}, func(l Line) { got = append(got, l) })
			if err != nil {
				t.Fatal(err)
			}
			checkSeq(t, got, tc.first, tc.last-tc.first+1)
			if n := len(got); n > 0 && (got[n-1].Pos.Offset != sp.Offset || got[n-1].Pos.Partial != 2) {
				t.Errorf("last line's position = %+v, want the checkpoint %+v", got[n-1].Pos, sp)
			}
			for _, l := range got[:max(len(got)-1, 0)] {
				if l.Pos.Partial != 0 {
					t.Errorf("%q: Partial %d, want 0 before the checkpoint's line", l.Text, l.Pos.Partial)
				}
			}
			if tc.olderThan >= 0 && seen > tc.last-tc.olderThan+2+len(got) {
				t.Errorf("older was asked about %d lines for %d lines wanted: read further back than needed", seen, len(got))
			}
		})
	}
}

// scanBack finds the line across chunk boundaries and passes over lines
// too long to be delivered, whatever their length.
func TestScanBack(t *testing.T) {
	const maxLine = 100
	var b bytes.Buffer
	var ends []int64 // ends[i]: offset just after line i
	for i := range 5000 {
		if i%997 == 3 {
			b.WriteString(strings.Repeat("x", 3*lookbackChunk/2) + "\n") // too long, not a line
		}
		b.WriteString(lineText(i) + "\n")
		ends = append(ends, int64(b.Len()))
	}
	r := bytes.NewReader(b.Bytes())
	for _, want := range []int{0, 1, 3, 4, 996, 1000, 2500, 4998} {
		var asked []int
		off, found, err := scanBack(r, int64(b.Len()), maxLine, func(line string) bool {
			if len(line) > maxLine {
				t.Fatalf("asked about a line of %d bytes", len(line))
			}
			n := lineNum(t, line)
			asked = append(asked, n)
			return n <= want
		})
		if err != nil || !found || off != ends[want] {
			t.Errorf("want %d: offset %d found %v err %v; want offset %d", want, off, found, err, ends[want])
		}
		if len(asked) != 5000-want {
			t.Errorf("want %d: asked about %d lines, want %d", want, len(asked), 5000-want)
		}
	}
	if _, found, _ := scanBack(r, int64(b.Len()), maxLine, func(string) bool { return false }); found {
		t.Error("found a line none of which is older")
	}
}
