package smtpguard

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
)

// TestPostfixE2E runs the guard in front of a private instance of the
// real Postfix (testdata/smtpguard/postfix-up.sh). It needs root, postfix
// and swaks, and is skipped with -short.
func TestPostfixE2E(t *testing.T) {
	pf := startPostfix(t, "swaks")
	dir, xport, pport, maillog := pf.dir, pf.xport, pf.pport, pf.maillog

	for _, tc := range []struct {
		handoff string
		port    int
		src     string
	}{
		{HandoffXCLIENT, xport, "127.0.0.77"},
		{HandoffProxy, pport, "127.0.0.78"},
	} {
		t.Run(tc.handoff, func(t *testing.T) {
			eng, _ := detectors.New(detectors.DefaultConfig(), nil)
			bl := &memBlocklist{}
			ev := &eventLog{eng: eng, bl: bl}
			cfg := testConfig(fmt.Sprintf("127.0.0.1:%d", tc.port))
			cfg.Handoff = tc.handoff
			cfg.GreetPause = Duration(200 * time.Millisecond)
			cfg.GreetTeaser = true
			h := startGuard(t, cfg, Deps{Logger: testLogger(t), Sink: ev.sink, Blocklist: bl}, nil, ev, bl)

			subject := "e2e-" + tc.handoff
			cmd := exec.Command("swaks", "--server", h.addr, "--local-interface", tc.src,
				"--helo", "client.example.org", "--from", "sender@example.net", "--to", "alice@example.com",
				"--header", "Subject: "+subject, "--timeout", "20")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			waitFor(t, maillog, "client=unknown["+tc.src+"]")
			waitForMail(t, filepath.Join(dir, "vmail/example.com/alice/new"), "Subject: "+subject)
			ev.find(t, event.KindReceived, event.ReasonNone)
			// A good client is nowhere near the error limits (soft 3, hard 6).
			for _, e := range ev.all() {
				if e.Client == mustAddr(tc.src) && (e.Kind == event.KindReject || e.Kind == event.KindTooManyErrors) {
					t.Errorf("good client refused: %s", e.Raw)
				}
			}

			// A pregreet bot is refused by the guard and never reaches Postfix.
			bot := map[string]string{HandoffXCLIENT: "127.0.0.88", HandoffProxy: "127.0.0.89"}[tc.handoff]
			c := dialFrom(t, h.addr, bot)
			c.send("EHLO bot.example\r\n")
			c.reply() // "220-" teaser then 554
			if !c.closed() {
				t.Error("bot not closed")
			}
			ev.find(t, event.KindPregreet, event.ReasonNone)

			// A harvester gets Postfix's own 550 5.1.1 answers through the
			// guard, the detectors ban it, its session ends at its next
			// command (the block list is asked at each), and its next
			// connection stops at the guard.
			harv := "127.0.0.9" + map[string]string{HandoffXCLIENT: "1", HandoffProxy: "2"}[tc.handoff]
			c = dialFrom(t, h.addr, harv)
			c.expect(220)
			c.cmd("EHLO harvester.example.org", 250)
			c.cmd("MAIL FROM:<h@example.net>", 250)
			for i := range 5 {
				text := c.cmd(fmt.Sprintf("RCPT TO:<nobody%d@example.com>", i), 550)
				if !strings.Contains(text, "5.1.1") || !strings.Contains(text, "User unknown") {
					t.Fatalf("upstream reply not relayed: %q", text)
				}
			}
			c.cmd("QUIT", 421)
			if _, banned := bl.Banned(mustAddr(harv)); !banned {
				t.Fatalf("harvester not banned: %s", ev.summary())
			}
			waitFor(t, maillog, "disconnect from unknown["+harv+"]")
			before := count(t, maillog, harv)
			c = dialFrom(t, h.addr, harv)
			c.expect(554)
			time.Sleep(300 * time.Millisecond)
			if n := count(t, maillog, harv); n != before {
				t.Errorf("banned client reached Postfix (%d → %d log lines)", before, n)
			}
			if n := count(t, maillog, bot); n != 0 {
				t.Errorf("pregreet bot reached Postfix: %d log lines", n)
			}
			b, _ := os.ReadFile(maillog)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "improper command pipelining") || strings.Contains(l, "warning:") && strings.Contains(l, "XCLIENT") {
					t.Errorf("Postfix complains about the guard: %s", l)
				}
				if testing.Verbose() && strings.Contains(l, "["+tc.src+"]") {
					t.Log(l)
				}
			}
		})
	}
}

// postfixLab is a private Postfix started by testdata/smtpguard/postfix-up.sh.
type postfixLab struct {
	dir          string
	xport, pport int    // its XCLIENT and PROXY listeners on 127.0.0.1
	maillog      string // its log
}

// startPostfix starts a private Postfix for the test, or skips the test
// (-short, not root, postfix or one of bins missing).
func startPostfix(t *testing.T, bins ...string) postfixLab {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root")
	}
	for _, bin := range append([]string{"postfix"}, bins...) {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("e2e: %s not installed", bin)
		}
	}
	script, _ := filepath.Abs("../testdata/smtpguard/postfix-up.sh")
	down, _ := filepath.Abs("../testdata/smtpguard/postfix-down.sh")
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // Postfix daemons run as postfix and must reach the queue
	}
	dir = filepath.Join(dir, "pf")
	xport, pport := freePort(t), freePort(t)
	out, err := exec.Command(script, dir, fmt.Sprint(xport), fmt.Sprint(pport)).CombinedOutput()
	if err != nil {
		t.Fatalf("postfix-up.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(down, dir).Run() })
	return postfixLab{dir: dir, xport: xport, pport: pport, maillog: filepath.Join(dir, "log", "mail.log")}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, file, s string) {
	t.Helper()
	for range 100 {
		b, _ := os.ReadFile(file)
		if strings.Contains(string(b), s) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(file)
	t.Fatalf("%q not in %s:\n%s", s, file, b)
}

func waitForMail(t *testing.T, dir, s string) {
	t.Helper()
	for range 100 {
		files, _ := os.ReadDir(dir)
		for _, f := range files {
			b, _ := os.ReadFile(filepath.Join(dir, f.Name()))
			if strings.Contains(string(b), s) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no mail with %q in %s", s, dir)
}

func count(t *testing.T, file, s string) int {
	b, _ := os.ReadFile(file)
	return strings.Count(string(b), "["+s+"]")
}
