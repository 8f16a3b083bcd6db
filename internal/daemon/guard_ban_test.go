package daemon

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/netnstest"
	"github.com/mxguard/mxguard/smtpguard"
)

// `mxguard ban` ends the live guard session of the client it bans. The
// daemon runs in one network namespace and the client in another, with
// 192.0.2.2: an address the Manager may ban (loopback it never bans).
func TestGuardBanEndsLiveSession(t *testing.T) {
	netnstest.Require(t)
	serverNS, clientNS := netnstest.Pair(t)
	cfg := newTestConfig(t)
	cfg.Logs = nil // guard only
	g := smtpguard.DefaultConfig()
	g.Listen = "192.0.2.1:2525" // the namespace is ours: the port is free
	g.Upstream = freeAddr(t)    // down: the session never gets that far
	g.GreetPause = 0
	g.Hostname = "mx.test.example"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		// Run's own goroutine opens the guard's listener: in serverNS.
		done <- netnstest.Do(serverNS, func() error {
			return Run(ctx, cfg, Options{LogOutput: logs, noHostAddrs: true, Guard: &g,
				Ready: func(d *Daemon) { ready <- d }})
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v\n%s", err, logs)
		}
	})
	var d *Daemon
	select {
	case d = <-ready:
	case err := <-done:
		t.Fatalf("daemon: %v\n%s", err, logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("not ready\n%s", logs)
	}

	var c net.Conn
	waitFor(t, "the guard to listen", 5*time.Second, func() bool {
		return netnstest.Do(clientNS, func() (err error) {
			c, err = net.DialTimeout("tcp", g.Listen, time.Second)
			return err
		}) == nil
	}, logs)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	reply := func() string {
		t.Helper()
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v\n%s", err, logs)
			}
			if len(l) < 4 || l[3] != '-' {
				return strings.TrimRight(l, "\r\n")
			}
		}
	}
	if l := reply(); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting %q", l)
	}
	c.Write([]byte("EHLO client.example.org\r\n"))
	if l := reply(); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("EHLO: %q", l)
	}

	if err := call(t, cfg.ControlSocket, control.Request{Cmd: control.CmdBan, IP: "192.0.2.2", For: "1h"}, nil); err != nil {
		t.Fatal(err)
	}
	if l, want := reply(), "421 4.7.0 mx.test.example Error: client host [192.0.2.2] banned"; l != want {
		t.Fatalf("after the ban: %q, want %q", l, want)
	}
	if _, err := r.ReadByte(); err == nil {
		t.Error("banned session not closed")
	}
	st, err := d.Status()
	if err != nil || st.Guard == nil || st.Guard.BannedSessions != 1 {
		t.Errorf("status: %+v %v", st.Guard, err)
	}
	if m := d.metrics(); m.Guard == nil || m.Guard.BannedSessions != 1 {
		t.Errorf("metrics: %+v", m.Guard)
	}
}
