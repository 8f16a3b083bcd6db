package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/config"
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
	d      *daemon
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
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{cfg: cfg, log: cfg.Logs[0], sock: cfg.ControlSocket, cancel: cancel,
		done: make(chan error, 1), logs: &syncBuffer{}}
	ready := make(chan *daemon, 1)
	reload := make(chan struct{}, 1)
	go func() {
		td.done <- daemonMain(ctx, cfg, daemonOptions{configPath: configPath, logOut: td.logs, noHostAddr: true,
			reload: reload, ready: func(d *daemon) { ready <- d }})
	}()
	select {
	case td.d = <-ready:
	case err := <-td.done:
		t.Fatalf("daemon did not start: %v\n%s", err, td.logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon not ready after 10s\n%s", td.logs)
	}
	t.Cleanup(func() { td.stop(t) })
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

func listJSON(t *testing.T, sock string) []ban.Ban {
	t.Helper()
	code, out, errOut := runCmd(t, "", "list", "--socket", sock, "--format", "json")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	var bans []ban.Ban
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var b ban.Ban
		if err := json.Unmarshal([]byte(line), &b); err != nil {
			t.Fatalf("list line %q: %v", line, err)
		}
		// The contract: ip, detector, reason, until.
		for _, k := range []string{`"ip":`, `"detector":`, `"reason":`, `"until":`} {
			if !strings.Contains(line, k) {
				t.Errorf("list line lacks %s: %s", k, line)
			}
		}
		bans = append(bans, b)
	}
	return bans
}

func statusOf(t *testing.T, sock string) daemonStatus {
	t.Helper()
	code, out, errOut := runCmd(t, "", "status", "--socket", sock, "--format", "json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var st daemonStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
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
		return hasBan(listJSON(t, td.sock), bad)
	}, td.logs)
	bans := listJSON(t, td.sock)
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
	code, out, _ := runCmd(t, "", "status", "--socket", td.sock)
	if code != 0 || !strings.Contains(out, "active bans: 1") || !strings.Contains(out, "dictionary") || !strings.Contains(out, td.log) {
		t.Errorf("status text (exit %d):\n%s", code, out)
	}
	code, out, _ = runCmd(t, "", "list", "--socket", td.sock)
	if code != 0 || !strings.Contains(out, bad+"/32") || !strings.Contains(out, "1 active ban") {
		t.Errorf("list table (exit %d):\n%s", code, out)
	}
	code, out, _ = runCmd(t, "", "explain", "--socket", td.sock, bad)
	if code != 0 || !strings.Contains(out, "BANNED") || !strings.Contains(out, "u4@example.com") {
		t.Errorf("explain (exit %d):\n%s", code, out)
	}

	// Restart: the ban is still there and the log is not read again.
	td.stop(t)
	td2 := startDaemon(t, cfg, "")
	if !hasBan(listJSON(t, td2.sock), bad) {
		t.Fatal("ban lost across restart")
	}
	appendLines(t, td2.log, dictLine("198.51.100.7", 0))
	waitFor(t, "the new line", 5*time.Second, func() bool { return statusOf(t, td2.sock).Pipeline.Lines >= 1 })
	time.Sleep(300 * time.Millisecond) // a double read would show up by now
	if st := statusOf(t, td2.sock); st.Pipeline.Lines != 1 || st.Pipeline.Kinds["reject"] != 1 {
		t.Errorf("after restart: lines = %d, want 1 (the log position must continue)", st.Pipeline.Lines)
	}
}

func TestDaemonControlCommands(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.Allowlist = append(cfg.Allowlist, "192.0.2.0/24")
	td := startDaemon(t, cfg, "")
	s := td.sock

	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"ban", "--socket", s, "203.0.113.7", "--for", "2h", "--reason", "spam run"}, 0, "banned 203.0.113.7/32 until", ""},
		{[]string{"ban", "--socket", s, "198.51.100.0/24", "--for", "1d"}, 0, "banned 198.51.100.0/24", ""},
		{[]string{"ban", "--socket", s, "192.0.2.10"}, 1, "", "prefix overlaps the allowlist"},
		{[]string{"ban", "--socket", s, "10.0.0.0/8"}, 1, "", "broader than the configured maximum"},
		{[]string{"ban", "--socket", s, "not-an-ip"}, 2, "", "neither an address nor a CIDR"},
		{[]string{"ban", "--socket", s, "203.0.113.8", "--for", "soon"}, 2, "", "--for"},
		{[]string{"explain", "--socket", s, "203.0.113.7"}, 0, "spam run", ""},
		{[]string{"explain", "--socket", s, "203.0.113.99"}, 0, "no record", ""},
		{[]string{"unban", "--socket", s, "203.0.113.7"}, 0, "unbanned 203.0.113.7/32", ""},
		{[]string{"unban", "--socket", s, "203.0.113.7"}, 0, "was not banned", ""},
		{[]string{"explain", "--socket", s, "203.0.113.7"}, 0, "unban", ""},
	}
	for _, tc := range tests {
		code, out, errOut := runCmd(t, "", tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out, errOut, tc.code, tc.out, tc.err)
		}
	}
	bans := listJSON(t, s)
	if len(bans) != 1 || bans[0].Prefix.String() != "198.51.100.0/24" || bans[0].Until.Sub(bans[0].Since) != 24*time.Hour || bans[0].Detector != "manual" {
		t.Errorf("bans = %+v", bans)
	}
}

func TestDaemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	for _, cmd := range []string{"list", "status", "ban 203.0.113.1", "unban 203.0.113.1", "explain 203.0.113.1"} {
		args := append(strings.Fields(cmd), "--socket", sock)
		code, _, errOut := runCmd(t, "", args...)
		want := "cannot reach mxguard daemon at " + sock + ": is it running? (connect: no such file or directory)"
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", cmd, code, errOut, want)
		}
	}
	// The socket comes from the config when --socket is not given.
	cfgFile := filepath.Join(t.TempDir(), "mxguard.yaml")
	os.WriteFile(cfgFile, []byte("control_socket: "+sock+"\n"), 0o600)
	if code, _, errOut := runCmd(t, "", "list", "--config", cfgFile); code != 1 || !strings.Contains(errOut, sock) {
		t.Errorf("list --config: exit %d, %q", code, errOut)
	}
	os.WriteFile(cfgFile, []byte("control_sockett: "+sock+"\n"), 0o600)
	if code, _, errOut := runCmd(t, "", "list", "--config", cfgFile); code != 2 || !strings.Contains(errOut, `unknown key "control_sockett"`) {
		t.Errorf("list with bad config: exit %d, %q", code, errOut)
	}
}

func TestDaemonReload(t *testing.T) {
	cfg := newTestConfig(t)
	path := filepath.Join(t.TempDir(), "mxguard.yaml")
	write := func(extra string) {
		y := fmt.Sprintf("logs: [%s]\nstate_dir: %s\ncontrol_socket: %s\ntail: {checkpoint_interval: 100ms}\n%s",
			cfg.Logs[0], cfg.StateDir, cfg.ControlSocket, extra)
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	td := startDaemon(t, c, path)
	// Raise the threshold and allowlist the attacker's network.
	write("detectors: {dictionary: {threshold: 3}}\nallowlist: [203.0.113.0/25]\nmetrics_listen: 127.0.0.1:0\n")
	td.d.reload()
	if got := td.d.pipe.Detectors().Config().Dictionary.Threshold; got != 3 {
		t.Errorf("threshold after reload = %d", got)
	}
	if ex, err := td.d.mgr.Explain(mustPrefix("203.0.113.5/32")); err != nil || !ex.Allowed {
		t.Error("allowlist not reloaded")
	}
	if !strings.Contains(td.logs.String(), "need a restart") || !strings.Contains(td.logs.String(), "metrics_listen") {
		t.Errorf("reload did not report keys needing a restart:\n%s", td.logs)
	}
	appendLines(t, td.log, dictLine("198.51.100.9", 0), dictLine("198.51.100.9", 1), dictLine("198.51.100.9", 2))
	waitFor(t, "ban at the reloaded threshold of 3", 5*time.Second, func() bool { return hasBan(listJSON(t, td.sock), "198.51.100.9") })
	// A broken config is refused and the running one kept.
	write("detectors: {dictionary: {threshold: 0}}\n")
	td.d.reload()
	if got := td.d.pipe.Detectors().Config().Dictionary.Threshold; got != 3 {
		t.Errorf("threshold after bad reload = %d, want 3 kept", got)
	}
	if !strings.Contains(td.logs.String(), "reload failed") {
		t.Error("bad reload not logged")
	}
}

func TestDaemonSecondInstance(t *testing.T) {
	cfg := newTestConfig(t)
	startDaemon(t, cfg, "")
	err := daemonMain(context.Background(), cfg, daemonOptions{noHostAddr: true})
	if err == nil || !strings.Contains(err.Error(), "another mxguard daemon") {
		t.Errorf("second daemon on the same state: %v", err)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
