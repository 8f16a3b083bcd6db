package tailer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Tests do not wait for the production recheck period.
	recheckEvery = 20 * time.Millisecond
	os.Exit(m.Run())
}

// memCP is an in-memory Checkpointer that round-trips through JSON-able
// values like the bbolt store does.
type memCP struct {
	mu    sync.Mutex
	m     map[string]Position
	saves int
}

func newMemCP() *memCP { return &memCP{m: make(map[string]Position)} }

func (c *memCP) LoadPosition(path string) (Position, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[path]
	return p, ok, nil
}

func (c *memCP) SavePosition(path string, p Position) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p.Head = append([]byte(nil), p.Head...)
	c.m[path] = p
	c.saves++
	return nil
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// harness runs a Follower and a consumer that records and acknowledges
// lines. stopAfter > 0 makes the consumer stop after that many lines (it
// neither records nor acknowledges the rest).
type harness struct {
	t      *testing.T
	f      *Follower
	out    chan Line
	cancel context.CancelFunc
	runErr chan error
	cdone  chan struct{}
	cstop  chan struct{}

	mu  sync.Mutex
	got []Line
}

func start(t *testing.T, cfg Config, cp Checkpointer, stopAfter int, tweak ...func(*Follower)) *harness {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = 10 * time.Millisecond
	}
	f, err := New(cfg, cp)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range tweak {
		fn(f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, f: f, out: make(chan Line, 64), cancel: cancel,
		runErr: make(chan error, 1), cdone: make(chan struct{}), cstop: make(chan struct{})}
	go func() { h.runErr <- f.Run(ctx, h.out) }()
	go func() {
		defer close(h.cdone)
		for {
			select {
			case l := <-h.out:
				h.mu.Lock()
				h.got = append(h.got, l)
				n := len(h.got)
				h.mu.Unlock()
				f.Ack(l)
				if stopAfter > 0 && n >= stopAfter {
					return
				}
			case <-h.cstop:
				return
			}
		}
	}()
	t.Cleanup(h.stop)
	return h
}

// stop stops the consumer first (so nothing more is acknowledged), then
// the follower, and waits for both.
func (h *harness) stop() {
	select {
	case <-h.cstop:
		return
	default:
	}
	close(h.cstop)
	<-h.cdone
	h.cancel()
	select {
	case err := <-h.runErr:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
}

func (h *harness) lines() []Line {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Line(nil), h.got...)
}

func (h *harness) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

func (h *harness) stats() FileStats { return h.f.Stats().Files[0] }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitCount waits until h has at least n lines.
func (h *harness) waitCount(n int, d time.Duration) {
	h.t.Helper()
	waitFor(h.t, d, fmt.Sprintf("%d lines (have %d)", n, h.count()), func() bool { return h.count() >= n })
}

// numbered line i.
func lineText(i int) string {
	return fmt.Sprintf("line %07d postfix/smtpd[%d]: connect from unknown[192.0.2.%d]", i, 1000+i%977, 100+i%150)
}

func lineNum(t *testing.T, s string) int {
	t.Helper()
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != "line" {
		t.Fatalf("unexpected line %q", s)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("unexpected line %q", s)
	}
	return n
}

// checkSeq asserts that lines are exactly want[0..] numbered from first, in order.
func checkSeq(t *testing.T, got []Line, first, n int) {
	t.Helper()
	if len(got) != n {
		t.Errorf("got %d lines, want %d", len(got), n)
	}
	for i, l := range got {
		if w := first + i; lineNum(t, l.Text) != w {
			t.Fatalf("line %d: got %q, want number %d (lost or duplicated lines)", i, l.Text, w)
		}
	}
}

// logWriter appends numbered lines to path, logrotate style.
type logWriter struct {
	t    *testing.T
	path string
	f    *os.File
}

func newLogWriter(t *testing.T, path string) *logWriter {
	w := &logWriter{t: t, path: path}
	w.reopen()
	t.Cleanup(func() {
		if w.f != nil {
			w.f.Close()
		}
	})
	return w
}

func (w *logWriter) reopen() {
	if w.f != nil {
		w.f.Close()
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	w.f = f
}

func (w *logWriter) write(s string) {
	if _, err := w.f.WriteString(s); err != nil {
		w.t.Fatal(err)
	}
}

func (w *logWriter) lines(from, to int) {
	var b strings.Builder
	for i := from; i <= to; i++ {
		b.WriteString(lineText(i))
		b.WriteByte('\n')
	}
	w.write(b.String())
}

// shift renames path.k to path.k+1, logrotate style, freeing path.1.
func shift(t *testing.T, path string) {
	for k := 8; k >= 1; k-- {
		from := fmt.Sprintf("%s.%d", path, k)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, fmt.Sprintf("%s.%d", path, k+1)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// rotateRename is logrotate "create": rename, then create an empty file.
// The writer keeps its old descriptor until it reopens.
func rotateRename(t *testing.T, path string) {
	shift(t, path)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// rotateCopyTruncate is logrotate "copytruncate".
func rotateCopyTruncate(t *testing.T, path string) {
	shift(t, path)
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
}

// manualNotifier is woken by the test only.
type manualNotifier struct{ c chan struct{} }

func (n *manualNotifier) C() <-chan struct{} { return n.c }
func (n *manualNotifier) Close()             {}
func (n *manualNotifier) poke() {
	select {
	case n.c <- struct{}{}:
	default:
	}
}
