package daemon

import (
	"bufio"
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
	// Run's own goroutine opens the guard's listener: in serverNS.
	td := startDaemonIn(t, serverNS, cfg, Options{Guard: &g})
	d, logs := td.d, td.logs

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
