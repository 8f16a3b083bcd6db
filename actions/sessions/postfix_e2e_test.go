package sessions

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// A real Postfix in the server namespace on 192.0.2.1:25, two clients in
// the middle of an SMTP transaction from 192.0.2.2 and 192.0.2.3: a ban of
// 192.0.2.2 through the ban manager (what `mxguard ban` does) with this
// action disconnects that client within a second, and the other one goes
// on and delivers.
func TestPostfixSessionEndsOnBan(t *testing.T) {
	netnstest.Require(t, "postfix")
	if testing.Short() {
		t.Skip("e2e: skipped with -short")
	}
	h := &sessionHost{} // no listeners of its own: port 25 is Postfix's
	h.server, h.client = netnstest.Pair(t)
	netnstest.Run(t, "ip", "-n", h.client, "addr", "add", "192.0.2.3/24", "dev", "mxgc")

	script, _ := filepath.Abs("../../testdata/smtpguard/postfix-up.sh")
	down, _ := filepath.Abs("../../testdata/smtpguard/postfix-down.sh")
	dir := filepath.Join(t.TempDir(), "pf")
	for d := filepath.Dir(dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // Postfix daemons run as postfix and must reach the queue
	}
	out, err := exec.Command("ip", "netns", "exec", h.server, "env", "LISTEN=192.0.2.1", script, dir, "25", "10026").CombinedOutput()
	if err != nil {
		t.Fatalf("postfix-up.sh in %s: %v\n%s", h.server, err, out)
	}
	t.Cleanup(func() { exec.Command(down, dir).Run() })

	mgr, err := ban.NewManager(ban.ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}},
		store.NewMemory(), []ban.Action{h.killer(t, DefaultConfig(), nil)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })

	type smtp struct {
		c net.Conn
		r *bufio.Reader
	}
	cmd := func(s smtp, line, want string) {
		t.Helper()
		if line != "" {
			if _, err := s.c.Write([]byte(line + "\r\n")); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
		}
		for {
			reply, err := s.r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if len(reply) < 4 || reply[3] != '-' {
				if !strings.HasPrefix(reply, want) {
					t.Fatalf("%s: got %q, want %s", line, reply, want)
				}
				return
			}
		}
	}
	open := func(local string) smtp {
		var c net.Conn
		if err := netnstest.Do(h.client, func() (err error) {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			c, err = d.Dial("tcp", "192.0.2.1:25")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second))
		s := smtp{c: c, r: bufio.NewReader(c)}
		cmd(s, "", "220")
		cmd(s, "EHLO client.example.org", "250")
		cmd(s, "MAIL FROM:<someone@example.net>", "250")
		cmd(s, "RCPT TO:<alice@example.com>", "250")
		return s
	}
	banned, other := open("192.0.2.2"), open("192.0.2.3")

	start := time.Now()
	if _, err := mgr.Ban(context.Background(), netip.MustParsePrefix("192.0.2.2/32"), time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	if closed, err := closedWithin(banned.c, start.Add(time.Second)); !closed {
		t.Fatalf("the banned client's session is still open a second after the ban: %v", err)
	}
	t.Logf("the banned client's session ended %s after the ban", time.Since(start).Round(time.Millisecond))

	cmd(other, "DATA", "354")
	cmd(other, "Subject: still here\r\n\r\nhello\r\n.", "250")
	cmd(other, "QUIT", "221")
	log := filepath.Join(dir, "log", "mail.log")
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), "lost connection after RCPT from unknown[192.0.2.2]") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix did not log the banned session's end:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
