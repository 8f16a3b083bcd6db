package control

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "control.sock")
	h := func(_ context.Context, req Request) (any, error) {
		switch req.Cmd {
		case CmdBan:
			return map[string]string{"ip": req.IP, "for": req.For, "reason": req.Reason}, nil
		case CmdList:
			return nil, nil
		default:
			return nil, errors.New("unknown command " + req.Cmd)
		}
	}
	s, err := Listen(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, %v; want 0600", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("socket dir mode = %v, %v; want 0750", st.Mode(), err)
	}

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out map[string]string
			ip := "192.0.2." + string(rune('1'+i))
			if err := Call(ctx, path, Request{Cmd: CmdBan, IP: ip, For: "1h", Reason: "x"}, &out); err != nil {
				t.Error(err)
				return
			}
			if out["ip"] != ip || out["for"] != "1h" {
				t.Errorf("got %v", out)
			}
		}()
	}
	wg.Wait()
	if err := Call(ctx, path, Request{Cmd: CmdList}, nil); err != nil {
		t.Errorf("list: %v", err)
	}
	if err := Call(ctx, path, Request{Cmd: "nope"}, nil); err == nil || err.Error() != "unknown command nope" {
		t.Errorf("handler error = %v", err)
	}

	// A second server on the same path is refused while the first answers.
	if _, err := Listen(path, h, nil); err == nil || !strings.Contains(err.Error(), "another mxguard daemon") {
		t.Errorf("second Listen = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
	err = Call(ctx, path, Request{Cmd: CmdStatus}, nil)
	want := "cannot reach mxguard daemon at " + path + ": is it running? (connect: no such file or directory)"
	var nr *NotRunningError
	if !errors.As(err, &nr) || err.Error() != want {
		t.Errorf("after close: %v\nwant %s", err, want)
	}
}

func TestStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(path, func(context.Context, Request) (any, error) { return nil, nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a crash: the file stays, nobody listens.
	s.ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal("expected stale socket file")
	}
	err = Call(context.Background(), path, Request{Cmd: CmdStatus}, nil)
	if !strings.Contains(err.Error(), "is it running? (connect: connection refused)") {
		t.Errorf("stale: %v", err)
	}
	s2, err := Listen(path, func(context.Context, Request) (any, error) { return "pong", nil }, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	go s2.Serve(context.Background())
	defer s2.Close()
	var out string
	if err := Call(context.Background(), path, Request{Cmd: CmdStatus}, &out); err != nil || out != "pong" {
		t.Errorf("%q %v", out, err)
	}
}

func TestNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	os.WriteFile(path, nil, 0o600)
	if _, err := Listen(path, nil, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("got %v", err)
	}
}

// serveTest runs a Server with h and limits on a fresh socket until the
// test ends and returns its path.
func serveTest(t *testing.T, h Handler, l Limits) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := Listen(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetLimits(l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		s.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return path
}

type item struct {
	N    int    `json:"n"`
	Text string `json:"text"`
}

func listHandler(n int) Handler {
	return func(_ context.Context, req Request) (any, error) {
		switch req.Cmd {
		case CmdList:
			return Stream(func(yield func(any) bool) error {
				for i := range n {
					if !yield(item{N: i, Text: "line\nwith \"quotes\""}) {
						return nil
					}
				}
				return nil
			}), nil
		case CmdStatus:
			return map[string]int{"items": n}, nil
		}
		return nil, errors.New("unknown command " + req.Cmd)
	}
}

func TestStreamIsOneJSONArray(t *testing.T) {
	for _, n := range []int{0, 1, 100000} {
		path := serveTest(t, listHandler(n), Limits{})
		var got []item
		if err := Call(context.Background(), path, Request{Cmd: CmdList}, &got); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(got) != n {
			t.Fatalf("n=%d: got %d items", n, len(got))
		}
		for i, it := range got {
			if it.N != i || it.Text != "line\nwith \"quotes\"" {
				t.Fatalf("n=%d: item %d = %+v", n, i, it)
			}
		}
	}
}

func TestConnectionLimit(t *testing.T) {
	path := serveTest(t, listHandler(1), Limits{MaxConns: 2})
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// The server has registered both idle connections once a request on
	// one of them is answered.
	if _, err := idle[0].Write([]byte(`{"cmd":"status"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(idle[0]).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	err := Call(context.Background(), path, Request{Cmd: CmdStatus}, nil)
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("third connection: err = %v, want busy", err)
	}
	idle[1].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := Call(context.Background(), path, Request{Cmd: CmdStatus}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a freed slot is never reused: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	idle[0].Close()
}

func TestRequestLimitPerConnection(t *testing.T) {
	path := serveTest(t, listHandler(1), Limits{MaxRequests: 3})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 4 {
		if _, err := c.Write([]byte(`{"cmd":"status"}` + "\n")); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		ok := strings.HasPrefix(line, `{"ok":true`)
		if want := i < 3; ok != want {
			t.Fatalf("request %d: reply %s", i+1, line)
		}
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("connection still open after the request limit")
	}
}

// Many clients asking for a large list at once neither get the whole list
// built per call nor starve a status request.
func TestStatusAnswersDuringListFlood(t *testing.T) {
	path := serveTest(t, listHandler(100000), Limits{MaxConns: 256, MaxStreams: 2})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", path)
			if err != nil {
				return
			}
			defer c.Close()
			if _, err := c.Write([]byte(`{"cmd":"list"}` + "\n")); err != nil {
				return
			}
			<-stop // read nothing: the stream blocks on a full socket
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the flood arrive
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var st map[string]int
		err := Call(ctx, path, Request{Cmd: CmdStatus}, &st)
		cancel()
		if err != nil || st["items"] != 100000 {
			t.Fatalf("status during a list flood: %v %v", st, err)
		}
	}
	close(stop)
	wg.Wait()
}

// A stream that fails, before or after some elements, leaves the reply
// unfinished: Call reports an error, never a short or empty list.
func TestStreamErrorBreaksTheReply(t *testing.T) {
	for _, after := range []int{0, 3} {
		h := func(_ context.Context, req Request) (any, error) {
			return Stream(func(yield func(any) bool) error {
				for i := range after {
					if !yield(item{N: i}) {
						return nil
					}
				}
				return errors.New("store gone")
			}), nil
		}
		path := serveTest(t, h, Limits{})
		var got []item
		err := Call(context.Background(), path, Request{Cmd: CmdList}, &got)
		if err == nil {
			t.Errorf("after %d elements: a failed stream read as a complete list of %d", after, len(got))
		}
	}
}
