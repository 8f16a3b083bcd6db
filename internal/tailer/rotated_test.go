package tailer

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// gzipFile replaces name with name.gz, as logrotate's compress does (a new
// file, so a new inode).
func gzipFile(t *testing.T, name string) {
	t.Helper()
	src, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(name + ".gz")
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(dst)
	if _, err := io.Copy(zw, src); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
}

// rotateNumbered is one logrotate "create" run with numbered names
// (path.1, path.2.gz, ...), compressing like "compress" alone (path.1 is
// compressed at once) or with "delaycompress" (path.1 stays plain until
// the next run).
func rotateNumbered(t *testing.T, path string, delay bool) {
	t.Helper()
	for k := 8; k >= 1; k-- {
		for _, ext := range []string{"", ".gz"} {
			from := fmt.Sprintf("%s.%d%s", path, k, ext)
			if _, err := os.Stat(from); err == nil {
				if err := os.Rename(from, fmt.Sprintf("%s.%d%s", path, k+1, ext)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if delay {
		if _, err := os.Stat(path + ".2"); err == nil {
			gzipFile(t, path+".2")
		}
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if !delay {
		gzipFile(t, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// rotateDated is logrotate "dateext" with "delaycompress": the file gets
// a date suffix, the previous dated file is compressed.
func rotateDated(t *testing.T, path string, day int) {
	t.Helper()
	name := func(d int) string { return fmt.Sprintf("%s-202601%02d", path, d) }
	if day > 1 {
		gzipFile(t, name(day-1))
	}
	if err := os.Rename(path, name(day)); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestRestartAfterRotations: logrotate ran several times while the
// follower was stopped. At start it finishes the checkpoint's file (now
// possibly compressed under another name), reads every file rotated after
// it, oldest first, then the live file: every line exactly once, in order.
func TestRestartAfterRotations(t *testing.T) {
	cases := []struct {
		name      string
		rotations int
		rotate    func(t *testing.T, path string, i int)
		old       string // suffix of an older rotated file, read long ago
	}{
		{"delaycompress twice", 2, func(t *testing.T, p string, _ int) { rotateNumbered(t, p, true) }, ".5"},
		{"delaycompress three times", 3, func(t *testing.T, p string, _ int) { rotateNumbered(t, p, true) }, ".5"},
		{"compress twice", 2, func(t *testing.T, p string, _ int) { rotateNumbered(t, p, false) }, ".5"},
		{"compress once", 1, func(t *testing.T, p string, _ int) { rotateNumbered(t, p, false) }, ".5"},
		{"dateext delaycompress three times", 3, func(t *testing.T, p string, i int) { rotateDated(t, p, i+1) }, "-20251231"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.log")
			// Older rotated files that were read long ago: must not be read again.
			if err := os.WriteFile(path+c.old, []byte(lineText(0)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			gzipFile(t, path+c.old)
			w := newLogWriter(t, path)
			cp := newMemCP()
			w.lines(1, 10)
			h := start(t, Config{Paths: []string{path}, FromStart: true}, cp, 0)
			h.waitCount(10, 5*time.Second)
			h.stop()

			w.lines(11, 15) // unread when the follower stopped
			next := 16
			for i := range c.rotations {
				c.rotate(t, path, i)
				w.reopen()
				w.lines(next, next+4)
				next += 5
			}
			h2 := start(t, Config{Paths: []string{path}, FromStart: true}, cp, 0)
			h2.waitCount(next-11, 5*time.Second)
			time.Sleep(50 * time.Millisecond) // nothing more may come
			h2.stop()
			checkSeq(t, h2.lines(), 11, next-11)
		})
	}
}

// TestRestartRotatedNamesGrowWithAge: files named path.1, path.2, ... in
// the order they were rotated (not logrotate's shifting). The name order
// then says the older files come after the checkpoint's; their mtimes say
// otherwise, so they are not read again.
func TestRestartRotatedNamesGrowWithAge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	cp := newMemCP()
	w.lines(1, 10)
	h := start(t, Config{Paths: []string{path}, FromStart: true}, cp, 0)
	h.waitCount(10, 5*time.Second)
	for k := 1; k <= 2; k++ { // rotated and read while running
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, k)); err != nil {
			t.Fatal(err)
		}
		w.reopen()
		w.lines(10*k+1, 10*k+10)
		h.waitCount(10*k+10, 5*time.Second)
	}
	h.stop()
	w.lines(31, 35)
	if err := os.Rename(path, path+".3"); err != nil {
		t.Fatal(err)
	}
	w.reopen()
	w.lines(36, 40)
	h2 := start(t, Config{Paths: []string{path}, FromStart: true}, cp, 0)
	h2.waitCount(10, 5*time.Second)
	time.Sleep(50 * time.Millisecond) // nothing more may come
	h2.stop()
	checkSeq(t, h2.lines(), 31, 10)
}
