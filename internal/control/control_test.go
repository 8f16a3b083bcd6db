package control

import (
	"context"
	"errors"
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
