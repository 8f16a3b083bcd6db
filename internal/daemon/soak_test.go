package daemon

import (
	"fmt"
	"io"
	"os"
	"testing"
	"time"
)

// soakWriter appends numbered Postfix lines and rotates the log like
// logrotate does, waiting for the daemon to catch up before each rotation
// (logrotate runs hours apart; two rotations in one poll interval are out
// of scope).
type soakWriter struct {
	t       *testing.T
	path    string
	written int
}

func (w *soakWriter) write(n int) {
	w.t.Helper()
	f, err := os.OpenFile(w.path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < n; i++ {
		w.written++
		fmt.Fprintf(f, "%s mx1 postfix/smtpd[%d]: connect from host%d.example[198.51.100.%d]\n",
			time.Now().Format(time.Stamp), 1000+w.written%50, w.written, 1+w.written%200)
	}
}

// rename is logrotate's default "create": move the log away, start a new one.
func (w *soakWriter) rename(k int) {
	w.t.Helper()
	if err := os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, k)); err != nil {
		w.t.Fatal(err)
	}
}

// copytruncate copies the log and truncates it in place; nothing is
// written in between (lines written there are lost by design).
func (w *soakWriter) copytruncate(k int) {
	w.t.Helper()
	src, err := os.Open(w.path)
	if err != nil {
		w.t.Fatal(err)
	}
	dst, err := os.Create(fmt.Sprintf("%s.%d", w.path, k))
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		w.t.Fatal(err)
	}
	src.Close()
	dst.Close()
	if err := os.Truncate(w.path, 0); err != nil {
		w.t.Fatal(err)
	}
}

// The daemon counts every line exactly once while the log is rotated by
// rename+create and by copytruncate, and across a restart during which the
// log is rotated again.
func TestDaemonRotationSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	cfg := newTestConfig(t)
	os.WriteFile(cfg.Logs[0], nil, 0o600) // start empty: every line counts
	w := &soakWriter{t: t, path: cfg.Logs[0]}
	td := startDaemon(t, cfg, "")
	seen := func() uint64 { return td.d.pipe.Stats().Lines }
	caughtUp := func(want int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d lines", want), 10*time.Second, func() bool { return seen() >= uint64(want) }, td.logs)
	}
	rot := 0
	for round := 0; round < 6; round++ {
		w.write(500)
		caughtUp(w.written)
		rot++
		if round%2 == 0 {
			w.rename(rot)
		} else {
			w.copytruncate(rot)
		}
		w.write(300) // right after the rotation, before the daemon notices
	}
	caughtUp(w.written)
	first := seen()

	// Stop, rotate and write while down, start again on the same state.
	w.write(200)
	caughtUp(w.written)
	first = seen()
	td.stop(t)
	w.write(250) // still in the old file
	rot++
	w.rename(rot)
	w.write(250) // the new file
	td2 := startDaemon(t, cfg, "")
	waitFor(t, "the rest after restart", 10*time.Second, func() bool {
		return first+td2.d.pipe.Stats().Lines >= uint64(w.written)
	}, td2.logs)
	time.Sleep(300 * time.Millisecond) // nothing more may come
	if got := first + td2.d.pipe.Stats().Lines; got != uint64(w.written) {
		t.Fatalf("daemon counted %d lines, %d were written", got, w.written)
	}
	if ev := td2.d.pipe.Stats().Events; ev != td2.d.pipe.Stats().Lines {
		t.Errorf("events %d != lines %d (a line was split or mangled)", ev, td2.d.pipe.Stats().Lines)
	}
}
