package daemon

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/smtpguard"
)

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The guard runs inside the daemon and feeds the daemon's pipeline: a
// client that talks before the greeting is refused by the guard and the
// pregreet detector decides against it (refused here only because the
// test client is on loopback, which is never banned).
func TestGuardInDaemon(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.Logs = nil // guard only
	g := smtpguard.DefaultConfig()
	g.Listen = freeAddr(t)
	g.Upstream = freeAddr(t) // down: nothing gets that far
	g.GreetPause = smtpguard.Duration(300 * time.Millisecond)
	g.Hostname = "mx.test.example"
	td := startDaemonWith(t, cfg, Options{Guard: &g})
	d, logs := td.d, td.logs

	var c net.Conn
	waitFor(t, "the guard to listen", 5*time.Second, func() bool {
		var err error
		c, err = net.Dial("tcp", g.Listen)
		return err == nil
	}, logs)
	c.Write([]byte("EHLO early.example\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var reply string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if reply = sc.Text(); !strings.HasPrefix(reply, "220-") {
			break
		}
	}
	c.Close()
	if !strings.HasPrefix(reply, "554 5.5.1") {
		t.Fatalf("pregreet reply %q", reply)
	}
	waitFor(t, "the pregreet decision", 5*time.Second, func() bool {
		return d.pipe.Stats().Decisions["pregreet"] == 1
	}, logs)
	st, err := d.Status()
	if err != nil || st.Guard == nil || st.Guard.Accepted == 0 {
		t.Errorf("status: %+v %v", st.Guard, err)
	}
}

// A guard that cannot listen stops the start with an error naming the key.
func TestGuardListenInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := newTestConfig(t)
	cfg.Logs = nil
	g := smtpguard.DefaultConfig()
	g.Listen = busy.Addr().String()
	g.Upstream = freeAddr(t)
	g.Hostname = "mx.test.example"
	err = Run(context.Background(), cfg, Options{noHostAddrs: true, Guard: &g})
	if err == nil || !strings.Contains(err.Error(), "guard.listen") {
		t.Fatalf("err = %v", err)
	}
}
