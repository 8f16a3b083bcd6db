package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/daemon"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// dictLine is an unknown-recipient reject from ip, stamped now (BSD).
func dictLine(ip string, i int) string {
	return fmt.Sprintf("%s mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <u%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<u%d@example.com> proto=ESMTP helo=<friend>",
		time.Now().Format(time.Stamp), ip, i, i)
}

// testConfig is a daemon config with its own log, state dir and socket.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Logs = []string{filepath.Join(dir, "mail.log")}
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.ControlSocket = filepath.Join(dir, "run", "control.sock")
	if err := os.WriteFile(cfg.Logs[0], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startDaemon runs the daemon in-process for the control commands to talk
// to, until the test ends.
func startDaemon(t *testing.T, cfg *config.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, cfg, daemon.Options{Ready: func(*daemon.Daemon) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not ready after 10s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
}

// waitFor polls cond every 20ms until it is true or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
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

// status, list and explain render what the daemon answers.
func TestDaemonCommandsOutput(t *testing.T) {
	cfg := testConfig(t)
	startDaemon(t, cfg)
	const bad = "203.0.113.45"
	f, err := os.OpenFile(cfg.Logs[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// With from_end the follower must have opened the log before the
	// test appends to it.
	waitFor(t, "the follower to open the log", 5*time.Second, func() bool {
		code, out, _ := runCmd(t, "", "status", "--socket", cfg.ControlSocket, "--format", "json")
		var st daemon.Status
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && len(st.Files) == 1 && st.Files[0].Inode != 0
	})
	for i := range 5 {
		fmt.Fprintln(f, dictLine(bad, i))
	}
	f.Close()
	waitFor(t, "the ban in `list`", 5*time.Second, func() bool { return len(listJSON(t, cfg.ControlSocket)) == 1 })

	code, out, _ := runCmd(t, "", "status", "--socket", cfg.ControlSocket)
	if code != 0 || !strings.Contains(out, "active bans: 1") || !strings.Contains(out, "dictionary") || !strings.Contains(out, cfg.Logs[0]) {
		t.Errorf("status text (exit %d):\n%s", code, out)
	}
	code, out, _ = runCmd(t, "", "list", "--socket", cfg.ControlSocket)
	if code != 0 || !strings.Contains(out, bad+"/32") || !strings.Contains(out, "1 active ban") {
		t.Errorf("list table (exit %d):\n%s", code, out)
	}
	code, out, _ = runCmd(t, "", "explain", "--socket", cfg.ControlSocket, bad)
	if code != 0 || !strings.Contains(out, "BANNED") || !strings.Contains(out, "u4@example.com") {
		t.Errorf("explain (exit %d):\n%s", code, out)
	}
}

func TestDaemonControlCommands(t *testing.T) {
	cfg := testConfig(t)
	cfg.Allowlist = append(cfg.Allowlist, "192.0.2.0/24")
	startDaemon(t, cfg)
	s := cfg.ControlSocket

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

// `mxguard daemon --cleanup` removes the firewall chain when SIGTERM stops
// it; without the flag the chain stays for the next start. Root only: the
// real iptables runs in a network namespace of the test's own.
func TestDaemonCleanupFlag(t *testing.T) {
	netnstest.Require(t, "iptables", "ip6tables")
	for _, cleanup := range []bool{true, false} {
		t.Run(fmt.Sprintf("cleanup=%v", cleanup), func(t *testing.T) {
			ns := netnstest.New(t)
			cfg := testConfig(t)
			file := emptyConfig(t, fmt.Sprintf("logs: [%s]\nstate_dir: %s\ncontrol_socket: %s\n"+
				"actions:\n  iptables: {enabled: true, iptables_path: %s, ip6tables_path: %s,\n"+
				"    iptables_restore_path: %s, ip6tables_restore_path: %s}\n",
				cfg.Logs[0], cfg.StateDir, cfg.ControlSocket,
				netnstest.Wrapper(t, ns, "iptables"), netnstest.Wrapper(t, ns, "ip6tables"),
				netnstest.Wrapper(t, ns, "iptables-restore"), netnstest.Wrapper(t, ns, "ip6tables-restore")))
			args := []string{"daemon", "--config", file}
			if cleanup {
				args = append(args, "--cleanup")
			}
			// Should the daemon not handle SIGTERM, this keeps the test
			// binary alive to report it.
			safety := make(chan os.Signal, 1)
			signal.Notify(safety, syscall.SIGTERM)
			defer signal.Stop(safety)
			var stderr bytes.Buffer
			done := make(chan int, 1)
			go func() { done <- run(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr}, args) }()
			chain := func(prog string) bool {
				out, _ := exec.Command("ip", "netns", "exec", ns, prog, "-S").CombinedOutput()
				return strings.Contains(string(out), "-N MXGUARD\n")
			}
			waitFor(t, "the daemon to answer and make its chain", 10*time.Second, func() bool {
				code, _, _ := runCmd(t, "", "status", "--socket", cfg.ControlSocket)
				return code == 0 && chain("iptables") && chain("ip6tables")
			})
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-done:
				if code != 0 {
					t.Fatalf("daemon exit %d:\n%s", code, stderr.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("SIGTERM did not stop the daemon within 10s")
			}
			for _, prog := range []string{"iptables", "ip6tables"} {
				if chain(prog) == cleanup {
					t.Errorf("%s: chain MXGUARD left after shutdown: %v, want %v\n%s", prog, chain(prog), !cleanup, stderr.String())
				}
			}
		})
	}
}
