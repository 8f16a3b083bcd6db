package policy

import (
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
	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/netnstest"
	"github.com/mxguard/mxguard/logparse"
)

// TestPostfixPolicy runs a real Postfix (Debian's, as its own instance in
// a network namespace at 192.0.2.1, never /etc/postfix) whose two smtpd
// ports ask the policy service with check_policy_service: one over the
// unix socket private/mxguard, one over TCP. swaks sends from 192.0.2.2
// to .5 in a second namespace (the Manager never bans loopback).
func TestPostfixPolicy(t *testing.T) {
	netnstest.Require(t, "postfix", "swaks")
	serverNS, clientNS := netnstest.Pair(t)
	for _, a := range []string{"192.0.2.3/24", "192.0.2.4/24", "192.0.2.5/24", "192.0.2.6/24"} {
		netnstest.Run(t, "ip", "-n", clientNS, "addr", "add", a, "dev", "mxgc")
	}
	const unixPort, inetPort, policyAddr = "2525", "2526", "192.0.2.1:10040"

	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // Postfix daemons run as postfix and must reach the queue
	}
	dir = filepath.Join(dir, "pf")
	script, _ := filepath.Abs("../../testdata/policy/postfix-policy-up.sh")
	down, _ := filepath.Abs("../../testdata/smtpguard/postfix-down.sh")
	out, err := exec.Command("ip", "netns", "exec", serverNS, "env", "LISTEN=192.0.2.1",
		script, dir, unixPort, inetPort, policyAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("postfix-policy-up.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(down, dir).Run() })
	maillog := filepath.Join(dir, "log", "mail.log")

	// the engine: a real Manager (in-memory store), one banned client
	mgr, err := ban.NewManager(ban.ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){}}, store.NewMemory(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	if _, err := mgr.Ban(context.Background(), netip.MustParsePrefix("192.0.2.3/32"), time.Hour, "test ban"); err != nil {
		t.Fatal(err)
	}
	ev := &events{}

	// unix socket service: greylisting (2 s delay, auto-allowlist after 2)
	ucfg := DefaultConfig()
	ucfg.Hostname = "mx.policy.example"
	ucfg.Listen = "unix:" + filepath.Join(dir, "spool", "private", "mxguard")
	ucfg.Owner, ucfg.Group, ucfg.Mode = "postfix", "postfix", "0660"
	ucfg.Greylist.Enabled, ucfg.Greylist.DB = true, filepath.Join(t.TempDir(), "greylist.db")
	ucfg.Greylist.Delay, ucfg.Greylist.AutoAllowlist = Duration(2*time.Second), 2
	usrv, err := New(ucfg, Deps{Blocklist: mgr, Sink: ev.sink})
	if err != nil {
		t.Fatal(err)
	}
	ul, err := usrv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	// TCP service inside the server namespace: rate limits
	icfg := DefaultConfig()
	icfg.Hostname = "mx.policy.example"
	icfg.Listen = "inet:" + policyAddr
	icfg.RateLimit.Limits = []RateLimit{{Count: 2, Window: Duration(time.Hour)}}
	icfg.AllowPeers = []string{"192.0.2.1/32"} // smtpd asks from the server's address
	isrv, err := New(icfg, Deps{Blocklist: mgr, Sink: ev.sink})
	if err != nil {
		t.Fatal(err)
	}
	var il net.Listener
	if err := netnstest.Do(serverNS, func() (err error) { il, err = isrv.Listen(); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go usrv.Serve(ctx, ul)
	go isrv.Serve(ctx, il)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		usrv.Shutdown(sctx)
		isrv.Shutdown(sctx)
	}
	t.Cleanup(stop)

	if fi, err := os.Stat(ucfg.Listen[len("unix:"):]); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v %v, want mode 0660", fi, err)
	}

	// swaks runs in the client namespace from src; it returns the whole
	// dialogue.
	swaks := func(port, src, helo, from, to string) string {
		cmd := exec.Command("ip", "netns", "exec", clientNS, "swaks", "--server", "192.0.2.1", "--port", port,
			"--local-interface", src, "--ehlo", helo, "--from", from, "--to", to,
			"--header", "Subject: policy test", "--timeout", "15")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	delivered := func(out string) bool { return strings.Contains(out, "<-  250 2.0.0 Ok: queued") }
	rcptReply := func(out string) string {
		_, after, ok := strings.Cut(out, " -> RCPT TO:")
		if !ok {
			return out
		}
		for _, l := range strings.Split(after, "\n") {
			if strings.HasPrefix(l, "<** ") || strings.HasPrefix(l, "<~  ") || strings.HasPrefix(l, "<-  ") {
				return l
			}
		}
		return after
	}

	for _, port := range []string{unixPort, inetPort} {
		t.Run("banned client rejected at RCPT/"+port, func(t *testing.T) {
			out := swaks(port, "192.0.2.3", "mta.remote.example", "x@remote.example", "alice@example.com")
			if r := rcptReply(out); !strings.Contains(r, "554 5.7.1 <alice@example.com>: Recipient address rejected: mxguard: client [192.0.2.3] is blocked") {
				t.Fatalf("RCPT reply %q\n%s", r, out)
			}
		})
		t.Run("bad HELO rejected/"+port, func(t *testing.T) {
			out := swaks(port, "192.0.2.5", "localhost", "y@remote.example", "alice@example.com")
			if r := rcptReply(out); !strings.Contains(r, "554 5.7.1 <alice@example.com>: Recipient address rejected: mxguard: HELO name <localhost> denied") {
				t.Fatalf("RCPT reply %q\n%s", r, out)
			}
		})
	}

	t.Run("greylisted, retried, delivered, auto-allowlisted", func(t *testing.T) {
		t1 := swaks(unixPort, "192.0.2.2", "mta.remote.example", "list-1001@lists.example", "alice@example.com")
		t2 := swaks(unixPort, "192.0.2.2", "mta.remote.example", "news@remote.example", "bob@example.com")
		for _, out := range []string{t1, t2} {
			if r := rcptReply(out); !strings.Contains(r, "450 4.7.1") || !strings.Contains(r, "mxguard: Greylisted, see ") {
				t.Fatalf("first attempt: %q\n%s", r, out)
			}
		}
		time.Sleep(2100 * time.Millisecond)
		// the retry of a VERP list comes with the next number: one triplet
		if out := swaks(unixPort, "192.0.2.2", "mta.remote.example", "list-1002@lists.example", "alice@example.com"); !delivered(out) {
			t.Fatalf("retry not delivered:\n%s", out)
		}
		if out := swaks(unixPort, "192.0.2.2", "mta.remote.example", "news@remote.example", "bob@example.com"); !delivered(out) {
			t.Fatalf("second retry not delivered:\n%s", out)
		}
		// two passes: the network skips greylisting now
		if out := swaks(unixPort, "192.0.2.6", "mta2.remote.example", "new@elsewhere.example", "alice@example.com"); !delivered(out) {
			t.Fatalf("auto-allowlisted network greylisted again:\n%s", out)
		}
		waitMail(t, filepath.Join(dir, "vmail", "example.com", "alice", "new"), "X-Greylist: delayed ")
	})

	t.Run("sender over its rate limit deferred", func(t *testing.T) {
		for i := range 2 {
			if out := swaks(inetPort, "192.0.2.4", "mta.remote.example", "busy@remote.example", "alice@example.com"); !delivered(out) {
				t.Fatalf("message %d within the limit:\n%s", i+1, out)
			}
		}
		out := swaks(inetPort, "192.0.2.4", "mta.remote.example", "busy@remote.example", "alice@example.com")
		if r := rcptReply(out); !strings.Contains(r, "450 4.7.1 <alice@example.com>: Recipient address rejected: mxguard: rate limit of 2 per 1h reached") {
			t.Fatalf("third message: %q\n%s", r, out)
		}
	})

	t.Run("malformed and oversized requests close that connection only", func(t *testing.T) {
		for _, raw := range []string{"garbage\n\n", "request=smtpd_access_policy\nx=" + strings.Repeat("y", 20000) + "\n\n"} {
			c, err := net.Dial("unix", ucfg.Listen[len("unix:"):])
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte(raw))
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !isClosed(err) {
				t.Fatalf("not closed: %v", err)
			}
			c.Close()
		}
		// Postfix's own connections still get answers
		out := swaks(unixPort, "192.0.2.3", "mta.remote.example", "x@remote.example", "alice@example.com")
		if r := rcptReply(out); !strings.Contains(r, "mxguard: client [192.0.2.3] is blocked") {
			t.Fatalf("after bad requests: %q", r)
		}
		if usrv.Stats().BadRequests != 2 {
			t.Fatalf("BadRequests = %d", usrv.Stats().BadRequests)
		}
	})

	t.Run("evidence: the policy's events count, Postfix's lines for them do not", func(t *testing.T) {
		// the unix socket's HELO finding is evidence; the inet port's is
		// not (inet_evidence is off: any local process could have asked)
		var helo, heloInet, blocked int
		for _, e := range ev.all() {
			switch {
			case e.Service != Service:
				t.Fatalf("service %q", e.Service)
			case e.Reason == event.ReasonHeloAccess && e.Abuse:
				helo++
			case e.Reason == event.ReasonHeloAccess:
				heloInet++
			case e.Reason == event.ReasonClientAccess && !e.Abuse:
				blocked++
			}
		}
		if helo != 1 || heloInet != 1 || blocked != 3 {
			t.Fatalf("%d HELO events (evidence), %d (not evidence), %d block list events (not evidence); want 1, 1 and 3", helo, heloInet, blocked)
		}
		b, _ := os.ReadFile(maillog)
		p := logparse.NewParser(time.UTC, time.Now())
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "NOQUEUE: reject: RCPT") || !strings.Contains(line, "mxguard: ") {
				continue
			}
			e, err := p.Parse(line)
			if err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			if e.Kind != event.KindReject || e.Abuse {
				t.Errorf("Postfix's line of a policy reply counts as evidence: %+v\n%s", e, line)
			}
			n++
		}
		if n < 8 {
			t.Fatalf("only %d policy rejects in the Postfix log", n)
		}
	})

	t.Run("policy service stopped: default_action=DUNNO delivers", func(t *testing.T) {
		stop()
		for _, port := range []string{unixPort, inetPort} {
			if out := swaks(port, "192.0.2.3", "mta.remote.example", "x@remote.example", "bob@example.com"); !delivered(out) {
				t.Fatalf("port %s with the policy service down:\n%s", port, out)
			}
		}
	})
}

// waitMail waits for a delivered message in maildir that contains s.
func waitMail(t *testing.T, maildir, s string) {
	t.Helper()
	for range 100 {
		ents, _ := os.ReadDir(maildir)
		for _, e := range ents {
			if b, _ := os.ReadFile(filepath.Join(maildir, e.Name())); strings.Contains(string(b), s) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no message with %q in %s", s, maildir)
}
