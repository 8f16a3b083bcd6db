package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// dictLine is an unknown-recipient reject from ip, stamped now (BSD).
func dictLine(ip string, i int) string {
	return fmt.Sprintf("%s mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <u%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<u%d@example.com> proto=ESMTP helo=<friend>",
		time.Now().Format(time.Stamp), ip, i, i)
}

func appendLines(t testing.TB, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// testDaemon is an in-process daemon with its own state dir, log and socket.
type testDaemon struct {
	cfg    *config.Config
	log    string
	sock   string
	cancel context.CancelFunc
	done   chan error
	d      *Daemon
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestConfig(t testing.TB) *config.Config {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Logs = []string{filepath.Join(dir, "mail.log")}
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.ControlSocket = filepath.Join(dir, "run", "control.sock")
	cfg.Tail.CheckpointInterval = 1e8 // 100ms
	cfg.LogLevel = "debug"
	if err := os.WriteFile(cfg.Logs[0], []byte("Nov 25 10:49:00 mx1 postfix/qmgr[1]: old line before start\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startDaemon(t testing.TB, cfg *config.Config, configPath string) *testDaemon {
	t.Helper()
	return startDaemonWith(t, cfg, Options{ConfigPath: configPath})
}

// startDaemonWith runs the daemon as the command line does (Run, with its
// signal handling) until the test ends.
func startDaemonWith(t testing.TB, cfg *config.Config, opts Options) *testDaemon {
	t.Helper()
	return startDaemonIn(t, "", cfg, opts)
}

// startDaemonIn is startDaemonWith with Run called on a thread in the
// network namespace ns ("": the test's own), so that the listeners it
// opens itself (the guard's) are in ns.
func startDaemonIn(t testing.TB, ns string, cfg *config.Config, opts Options) *testDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{cfg: cfg, sock: cfg.ControlSocket, cancel: cancel,
		done: make(chan error, 1), logs: &syncBuffer{}}
	if len(cfg.Logs) > 0 {
		td.log = cfg.Logs[0]
	}
	ready := make(chan *Daemon, 1)
	opts.LogOutput = td.logs
	opts.noHostAddrs = true
	opts.Ready = func(d *Daemon) { ready <- d }
	go func() {
		if ns == "" {
			td.done <- Run(ctx, cfg, opts)
			return
		}
		td.done <- netnstest.Do(ns, func() error { return Run(ctx, cfg, opts) })
	}()
	select {
	case td.d = <-ready:
	case err := <-td.done:
		t.Fatalf("daemon did not start: %v\n%s", err, td.logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon not ready after 10s\n%s", td.logs)
	}
	t.Cleanup(func() { td.stop(t) })
	if td.d.follower == nil {
		return td
	}
	// With from_end the follower must have opened the log before a test
	// appends to it.
	waitFor(t, "the follower to open the log", 5*time.Second, func() bool {
		fs := td.d.follower.Stats().Files
		return len(fs) > 0 && fs[0].Inode != 0
	}, td.logs)
	return td
}

func (td *testDaemon) stop(t testing.TB) {
	t.Helper()
	if td.cancel == nil {
		return
	}
	td.cancel()
	td.cancel = nil
	select {
	case err := <-td.done:
		if err != nil {
			t.Errorf("daemon: %v\n%s", err, td.logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon did not stop within 10s\n%s", td.logs)
	}
}

// waitFor polls cond every 20ms until it is true or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool, logs ...fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s\n%s", d, what, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call sends one request over the control socket, as the CLI does.
func call(t testing.TB, sock string, req control.Request, out any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return control.Call(ctx, sock, req, out)
}

func list(t testing.TB, sock string) []ban.Ban {
	t.Helper()
	var bans []ban.Ban
	if err := call(t, sock, control.Request{Cmd: control.CmdList}, &bans); err != nil {
		t.Fatalf("list: %v", err)
	}
	return bans
}

func statusOf(t testing.TB, sock string) Status {
	t.Helper()
	var st Status
	if err := call(t, sock, control.Request{Cmd: control.CmdStatus}, &st); err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func hasBan(bans []ban.Ban, ip string) bool {
	for _, b := range bans {
		if b.Prefix.Addr().String() == ip {
			return true
		}
	}
	return false
}

func TestDaemonE2E(t *testing.T) {
	cfg := newTestConfig(t)
	td := startDaemon(t, cfg, "")
	const bad = "203.0.113.45"

	var lines []string
	for i := range 5 {
		lines = append(lines, dictLine(bad, i))
	}
	appendLines(t, td.log, lines...)
	waitFor(t, "the dictionary attacker in `list`", 5*time.Second, func() bool {
		return hasBan(list(t, td.sock), bad)
	}, td.logs)
	bans := list(t, td.sock)
	if len(bans) != 1 || bans[0].Detector != "dictionary" || bans[0].Prefix.String() != bad+"/32" {
		t.Fatalf("bans = %+v", bans)
	}
	st := statusOf(t, td.sock)
	if st.Pipeline.Lines != 5 || st.Pipeline.Kinds["reject"] != 5 || st.Manager.ActiveBans != 1 || st.Pipeline.Decisions["dictionary"] != 1 {
		t.Errorf("status = %+v", st.Pipeline)
	}
	if len(st.Files) != 1 || st.Files[0].Path != td.log {
		t.Errorf("status files = %+v", st.Files)
	}
	var ex ban.Explanation
	if err := call(t, td.sock, control.Request{Cmd: control.CmdExplain, IP: bad}, &ex); err != nil {
		t.Fatal(err)
	}
	if !ex.Banned || ex.Record == nil || len(ex.Record.Lines) != 5 || !strings.Contains(ex.Record.Lines[4], "u4@example.com") {
		t.Errorf("explain = %+v", ex)
	}

	// Restart: the ban is still there and the log is not read again.
	td.stop(t)
	td2 := startDaemon(t, cfg, "")
	if !hasBan(list(t, td2.sock), bad) {
		t.Fatal("ban lost across restart")
	}
	appendLines(t, td2.log, dictLine("198.51.100.7", 0))
	waitFor(t, "the new line", 5*time.Second, func() bool { return statusOf(t, td2.sock).Pipeline.Lines >= 1 })
	time.Sleep(300 * time.Millisecond) // a double read would show up by now
	if st := statusOf(t, td2.sock); st.Pipeline.Lines != 1 || st.Pipeline.Kinds["reject"] != 1 {
		t.Errorf("after restart: lines = %d, want 1 (the log position must continue)", st.Pipeline.Lines)
	}
}

// The control commands over the socket: manual bans and unbans, with the
// allowlist and prefix limits enforced, and their errors.
func TestDaemonControlCommands(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.Allowlist = append(cfg.Allowlist, "192.0.2.0/24")
	td := startDaemon(t, cfg, "")
	tests := []struct {
		req  control.Request
		want string // substring of the result or of the error
		err  bool
	}{
		{control.Request{Cmd: control.CmdBan, IP: "203.0.113.7", For: "2h", Reason: "spam run"}, `"reason":"spam run"`, false},
		{control.Request{Cmd: control.CmdBan, IP: "198.51.100.0/24", For: "1d"}, `"ip":"198.51.100.0/24"`, false},
		{control.Request{Cmd: control.CmdBan, IP: "192.0.2.10"}, "prefix overlaps the allowlist", true},
		{control.Request{Cmd: control.CmdBan, IP: "10.0.0.0/8"}, "broader than the configured maximum", true},
		{control.Request{Cmd: control.CmdBan, IP: "not-an-ip"}, "neither an address nor a CIDR", true},
		{control.Request{Cmd: control.CmdBan, IP: "203.0.113.8", For: "soon"}, `invalid duration "soon"`, true},
		{control.Request{Cmd: control.CmdBan, IP: "203.0.113.8", For: "213504d"}, "at most 106751d", true},
		{control.Request{Cmd: control.CmdBan, IP: "203.0.113.8", For: "0"}, "must be positive", true},
		{control.Request{Cmd: control.CmdExplain, IP: "203.0.113.7"}, "spam run", false},
		{control.Request{Cmd: control.CmdUnban, IP: "203.0.113.7"}, `"removed":true`, false},
		{control.Request{Cmd: control.CmdUnban, IP: "203.0.113.7"}, `"removed":false`, false},
		{control.Request{Cmd: "frobnicate"}, `unknown command "frobnicate"`, true},
	}
	for _, tc := range tests {
		var raw json.RawMessage
		err := call(t, td.sock, tc.req, &raw)
		got := string(raw)
		if err != nil {
			got = err.Error()
		}
		if (err != nil) != tc.err || !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %s (error %v); want %q (error %v)", tc.req, got, err != nil, tc.want, tc.err)
		}
	}
	bans := list(t, td.sock)
	if len(bans) != 1 || bans[0].Prefix.String() != "198.51.100.0/24" || bans[0].Until.Sub(bans[0].Since) != 24*time.Hour || bans[0].Detector != "manual" {
		t.Errorf("bans = %+v", bans)
	}
}

func TestDaemonSecondInstance(t *testing.T) {
	cfg := newTestConfig(t)
	startDaemon(t, cfg, "")
	err := Run(context.Background(), cfg, Options{noHostAddrs: true})
	if err == nil || !strings.Contains(err.Error(), "another mxguard daemon") {
		t.Errorf("second daemon on the same state: %v", err)
	}
}
