package daemon

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
)

// configFile is a config file for a test daemon: its own log, state and
// socket, plus extra YAML. write replaces the file's extra part.
type configFile struct {
	t    *testing.T
	path string
	base *config.Config
}

func newConfigFile(t *testing.T, extra string) *configFile {
	f := &configFile{t: t, path: filepath.Join(t.TempDir(), "mxguard.yaml"), base: newTestConfig(t)}
	f.write(extra)
	return f
}

func (f *configFile) write(extra string) {
	f.t.Helper()
	y := fmt.Sprintf("logs: [%s]\nstate_dir: %s\ncontrol_socket: %s\ntail: {checkpoint_interval: 100ms}\nlog_level: debug\n%s",
		f.base.Logs[0], f.base.StateDir, f.base.ControlSocket, extra)
	if err := os.WriteFile(f.path, []byte(y), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func (f *configFile) load() *config.Config {
	f.t.Helper()
	c, err := config.Load(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

var reloadDone = regexp.MustCompile(`msg="(configuration reloaded|reload failed)`)

// sighup sends SIGHUP to this process, as `systemctl reload` does, and
// waits until the daemon has finished a reload. A catch-all handler keeps
// the test binary alive should the daemon not handle SIGHUP, so that the
// test fails with a message instead of the process dying.
func (td *testDaemon) sighup(t *testing.T) {
	t.Helper()
	safety := make(chan os.Signal, 1)
	signal.Notify(safety, syscall.SIGHUP)
	defer signal.Stop(safety)
	before := len(reloadDone.FindAllString(td.logs.String(), -1))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the daemon to reload on SIGHUP", 5*time.Second, func() bool {
		return len(reloadDone.FindAllString(td.logs.String(), -1)) > before
	}, td.logs)
}

// restartKeys returns the keys of the last "need a restart" warning.
func restartKeys(logs string) []string {
	m := regexp.MustCompile(`msg="reload: these changes need a restart" keys="?\[([^\]]*)\]`).FindAllStringSubmatch(logs, -1)
	if len(m) == 0 {
		return nil
	}
	return strings.Fields(m[len(m)-1][1])
}

// A SIGHUP reloads the config file: new detectors count at once, the new
// allowlist lifts a ban it covers, keys that need a restart are named and
// keep their running values, and a broken file keeps the running config.
func TestReloadOnSIGHUP(t *testing.T) {
	f := newConfigFile(t, "")
	td := startDaemon(t, f.load(), f.path)
	var b struct{}
	if err := call(t, td.sock, control.Request{Cmd: control.CmdBan, IP: "203.0.113.5", For: "1h"}, &b); err != nil {
		t.Fatal(err)
	}
	if !hasBan(list(t, td.sock), "203.0.113.5") {
		t.Fatal("manual ban not listed")
	}

	// Raise the threshold, allowlist the banned network, and change keys
	// that need a restart.
	f.write("detectors: {dictionary: {threshold: 3}}\nallowlist: [203.0.113.0/25]\nmetrics_listen: 127.0.0.1:0\ndry_run: true\n")
	td.sighup(t)
	if hasBan(list(t, td.sock), "203.0.113.5") {
		t.Errorf("the reloaded allowlist covers 203.0.113.5 but its ban was not lifted\n%s", td.logs)
	}
	if got, want := restartKeys(td.logs.String()), []string{"metrics_listen", "dry_run"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("keys reported as needing a restart = %q, want %q\n%s", got, want, td.logs)
	}
	if st := statusOf(t, td.sock); st.DryRun {
		t.Error("dry_run took effect without a restart")
	}
	appendLines(t, td.log, dictLine("198.51.100.9", 0), dictLine("198.51.100.9", 1), dictLine("198.51.100.9", 2))
	waitFor(t, "a ban at the reloaded threshold of 3", 5*time.Second, func() bool { return hasBan(list(t, td.sock), "198.51.100.9") }, td.logs)
	// An address the new allowlist covers is not banned again.
	appendLines(t, td.log, dictLine("203.0.113.5", 0), dictLine("203.0.113.5", 1), dictLine("203.0.113.5", 2))
	waitFor(t, "the refused ban", 5*time.Second, func() bool {
		return strings.Contains(td.logs.String(), `msg="ban refused" ip=203.0.113.5/32`)
	}, td.logs)

	// A broken file is refused and the running configuration kept.
	f.write("detectors: {dictionary: {threshold: 0}}\n")
	td.sighup(t)
	if got := td.d.pipe.Detectors().Config().Dictionary.Threshold; got != 3 {
		t.Errorf("threshold after a bad reload = %d, want 3 kept", got)
	}
	if !strings.Contains(td.logs.String(), "reload failed; keeping the running configuration") {
		t.Errorf("bad reload not logged\n%s", td.logs)
	}
}

// A changed dry_run needs a restart and says so; with --dry-run the flag
// wins over the file, before and after a reload.
func TestReloadDryRun(t *testing.T) {
	tests := []struct {
		name        string
		file, after string // dry_run in the file at start and at the reload
		flag        bool   // --dry-run
		restart     bool   // dry_run among the keys needing a restart
		running     bool   // dry-run in force after the reload
	}{
		{"off to on", "false", "true", false, true, false},
		{"on to off", "true", "false", false, true, true},
		{"unchanged", "true", "true", false, false, true},
		{"flag and file off to on", "false", "true", true, false, true},
		{"flag and file on to off", "true", "false", true, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newConfigFile(t, "dry_run: "+tc.file+"\n")
			td := startDaemonWith(t, f.load(), Options{ConfigPath: f.path, DryRun: tc.flag})
			f.write("dry_run: " + tc.after + "\n")
			td.sighup(t)
			keys := restartKeys(td.logs.String())
			if got := strings.Contains(" "+strings.Join(keys, " ")+" ", " dry_run "); got != tc.restart {
				t.Errorf("dry_run needs a restart: logged %v, want %v (keys %q)\n%s", got, tc.restart, keys, td.logs)
			}
			if st := statusOf(t, td.sock); st.DryRun != tc.running {
				t.Errorf("dry-run in force = %v, want %v", st.DryRun, tc.running)
			}
		})
	}
}
