package smtpguard

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// TestPostfixBanEndsSession runs the guard in front of a real Postfix
// with the real detectors and ban Manager, wired as the daemon wires them
// (the Manager is the block list and tells the guard of new bans). The
// client lives in a network namespace with 192.0.2.2, an address the
// Manager may ban (it never bans loopback). A client banned in the middle
// of its session - by its own 5th unknown recipient, or from outside (as
// `mxguard ban` does) with a transaction open or in the middle of DATA -
// gets 421 at once and nothing more of it reaches Postfix.
func TestPostfixBanEndsSession(t *testing.T) {
	pf := startPostfix(t)
	netnstest.Require(t)
	serverNS, clientNS := netnstest.Pair(t)
	const clientIP = "192.0.2.2"

	mgr, err := ban.NewManager(ban.ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}},
		store.NewMemory(), nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	eng, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sink := func(ev event.Event) { // the daemon's pipeline: detectors, then the Manager
		for _, d := range eng.Observe(ev) {
			if _, _, err := mgr.Decide(context.Background(), d); err != nil {
				t.Errorf("decide: %v", err)
			}
		}
	}
	cfg := testConfig(fmt.Sprintf("127.0.0.1:%d", pf.xport))
	g, err := New(cfg, Deps{Logger: testLogger(t), Sink: sink, Blocklist: mgr})
	if err != nil {
		t.Fatal(err)
	}
	mgr.OnBan(func(b ban.Ban) { g.EndBanned(b.Prefix, b.Reason) })
	var l net.Listener
	if err := netnstest.Do(serverNS, func() (err error) {
		l, err = net.Listen("tcp", "192.0.2.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := serveGuard(t, g, l, nil, nil, nil) // upstream dials leave from the test's own namespace
	connect := func() *tclient {
		var c net.Conn
		if err := netnstest.Do(clientNS, func() (err error) {
			c, err = net.DialTimeout("tcp", h.addr, 5*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		t.Cleanup(func() { c.Close() })
		cl := &tclient{t: t, c: c, r: bufio.NewReader(c)}
		cl.expect(220)
		cl.cmd("EHLO client.example.org", 250)
		return cl
	}
	// disconnected waits for Postfix to log the n-th end of a session of
	// the client and returns that line.
	disconnected := func(n int) string {
		t.Helper()
		var lines []string
		for range 100 {
			lines = lines[:0]
			b, _ := os.ReadFile(pf.maillog)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "disconnect from unknown["+clientIP+"]") {
					lines = append(lines, l)
				}
			}
			if len(lines) >= n {
				return lines[n-1]
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("no %d-th disconnect of %s in the Postfix log:\n%s", n, clientIP, lines)
		return ""
	}
	prefix := netip.MustParsePrefix(clientIP + "/32")
	tries := func(text string) int { b, _ := os.ReadFile(pf.maillog); return strings.Count(string(b), text) }

	t.Run("own 5th unknown recipient", func(t *testing.T) {
		c := connect()
		c.cmd("MAIL FROM:<h@example.net>", 250)
		for i := range 5 {
			if text := c.cmd(fmt.Sprintf("RCPT TO:<nobody%d@example.com>", i), 550); !strings.Contains(text, "User unknown") {
				t.Fatalf("Postfix's refusal not relayed: %q", text)
			}
		}
		expectBanned(t, c, clientIP)
		c.send("RCPT TO:<alice@example.com>\r\n") // the socket is closed: goes nowhere
		if _, banned := mgr.Banned(mustAddr(clientIP)); !banned {
			t.Fatal("not banned by the Manager")
		}
		line := disconnected(1)
		if !strings.Contains(line, "rcpt=0/5") || !strings.Contains(line, "quit=1") {
			t.Errorf("Postfix saw more than the 5 refused recipients, or no QUIT: %s", line)
		}
	})

	t.Run("external ban, transaction open", func(t *testing.T) {
		if _, err := mgr.Unban(context.Background(), prefix); err != nil {
			t.Fatal(err)
		}
		c := connect()
		c.cmd("MAIL FROM:<s@example.net>", 250)
		c.cmd("RCPT TO:<alice@example.com>", 250)
		start := time.Now()
		if _, err := mgr.Ban(context.Background(), netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "by hand"); err != nil {
			t.Fatal(err)
		}
		expectBanned(t, c, clientIP)
		t.Logf("421 %s after the ban", time.Since(start).Round(time.Microsecond))
		c.send("RCPT TO:<bob@example.com>\r\nDATA\r\n")
		line := disconnected(2)
		if !strings.Contains(line, "rcpt=1") || !strings.Contains(line, "quit=1") || strings.Contains(line, "data=") {
			t.Errorf("Postfix saw more than the open transaction, or no QUIT: %s", line)
		}
		if n := tries("bob@example.com"); n != 0 {
			t.Errorf("a recipient sent after the ban reached Postfix (%d log lines)", n)
		}
	})

	t.Run("external ban in DATA", func(t *testing.T) {
		if _, err := mgr.Unban(context.Background(), netip.MustParsePrefix("192.0.2.0/24")); err != nil {
			t.Fatal(err)
		}
		c := connect()
		c.cmd("MAIL FROM:<s@example.net>", 250)
		c.cmd("RCPT TO:<alice@example.com>", 250)
		c.cmd("DATA", 354)
		c.send("Subject: never delivered\r\n\r\nthe first half\r\n")
		time.Sleep(100 * time.Millisecond)
		if _, err := mgr.Ban(context.Background(), prefix, time.Hour, "by hand"); err != nil {
			t.Fatal(err)
		}
		expectBanned(t, c, clientIP)
		c.send("the second half\r\n.\r\n")
		waitFor(t, pf.maillog, "lost connection after DATA")
		time.Sleep(300 * time.Millisecond)
		files, _ := os.ReadDir(filepath.Join(pf.dir, "vmail/example.com/alice/new"))
		for _, f := range files {
			if b, _ := os.ReadFile(filepath.Join(pf.dir, "vmail/example.com/alice/new", f.Name())); strings.Contains(string(b), "never delivered") {
				t.Error("the message of a client banned in DATA was delivered")
			}
		}
	})
	if st := g.Stats(); st.BannedSessions != 3 {
		t.Errorf("stats %+v", st)
	}
	if testing.Verbose() {
		b, _ := os.ReadFile(pf.maillog)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, clientIP) {
				t.Log(l)
			}
		}
	}
}
