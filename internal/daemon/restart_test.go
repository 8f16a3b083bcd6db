package daemon

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
)

// pipeliningLine is an improper-pipelining line from ip, stamped now: the
// first one decides.
func pipeliningLine(ip string) string {
	return fmt.Sprintf("%s mx1 postfix/smtpd[8966]: improper command pipelining after HELO from unknown[%s]: MAIL FROM:<a@b.example>\\r\\nRCPT TO:<u@example.com>\\r\\n",
		time.Now().Format(time.Stamp), ip)
}

func explain(t testing.TB, sock, ip string) ban.Explanation {
	t.Helper()
	var ex ban.Explanation
	if err := call(t, sock, control.Request{Cmd: control.CmdExplain, IP: ip}, &ex); err != nil {
		t.Fatalf("explain %s: %v", ip, err)
	}
	return ex
}

// The detectors' windows survive a restart: three unknown recipients
// before it and two after are the five that ban.
func TestDaemonRestartKeepsWindows(t *testing.T) {
	cfg := newTestConfig(t)
	const bad = "203.0.113.61"
	td := startDaemon(t, cfg, "")
	appendLines(t, td.log, dictLine(bad, 0), dictLine(bad, 1), dictLine(bad, 2))
	waitFor(t, "3 lines read", 5*time.Second, func() bool { return statusOf(t, td.sock).Pipeline.Lines == 3 }, td.logs)
	td.stop(t)

	td2 := startDaemon(t, cfg, "")
	appendLines(t, td2.log, dictLine(bad, 3), dictLine(bad, 4))
	waitFor(t, "the dictionary attacker banned after the restart", 5*time.Second, func() bool {
		return hasBan(list(t, td2.sock), bad)
	}, td2.logs)
	ex := explain(t, td2.sock, bad)
	if ex.Record == nil || ex.Record.Evidence != 5 || len(ex.Record.Lines) != 5 {
		t.Errorf("explain after restart = %+v, want 5 evidence lines", ex.Record)
	}
	if st := statusOf(t, td2.sock); st.Pipeline.Lines != 2 || st.Pipeline.Warm.Lines != 3 {
		t.Errorf("after restart: lines = %d, warm = %+v; want 2 new and 3 read again before the checkpoint",
			st.Pipeline.Lines, st.Pipeline.Warm)
	}
}

// crashEnv names the state directory of the daemon that
// TestDaemonCrashChild runs in a child process, to be killed by SIGKILL.
const crashEnv = "MXGUARD_TEST_CRASH_DIR"

// crashConfig is the configuration of the crash test's daemons in dir.
func crashConfig(dir string, checkpoint time.Duration) *config.Config {
	cfg := config.Default()
	cfg.Logs = []string{filepath.Join(dir, "mail.log")}
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.ControlSocket = filepath.Join(dir, "run", "control.sock")
	cfg.Tail.CheckpointInterval = detectors.Duration(checkpoint)
	cfg.LogLevel = "debug"
	return cfg
}

// TestDaemonCrashChild is the daemon of TestDaemonCrashNoDoubleCount, in a
// child process: it saves no checkpoint by itself (interval 1h) and runs
// until it is killed.
func TestDaemonCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestDaemonCrashNoDoubleCount")
	}
	cfg := crashConfig(dir, time.Hour)
	logf, err := os.OpenFile(filepath.Join(dir, "child.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), cfg, Options{LogOutput: logf, noHostAddrs: true})
	t.Fatalf("daemon returned: %v", err)
}

// After a kill -9, the lines read since the last checkpoint are read
// again; each must count once: a ban's evidence is the number of its lines.
func TestDaemonCrashNoDoubleCount(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cfg := crashConfig(dir, 100*time.Millisecond)
	if err := os.WriteFile(cfg.Logs[0], []byte("Nov 25 10:49:00 mx1 postfix/qmgr[1]: old line before start\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A first run leaves a checkpoint at the end of the log.
	startDaemon(t, cfg, "").stop(t)

	child := exec.Command(os.Args[0], "-test.run=^TestDaemonCrashChild$", "-test.v")
	child.Env = append(os.Environ(), crashEnv+"="+dir)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	}()
	childLog := stringerFunc(func() string { b, _ := os.ReadFile(filepath.Join(dir, "child.log")); return string(b) })
	waitFor(t, "the child daemon to follow the log", 20*time.Second, func() bool {
		var st Status
		if control.Call(context.Background(), cfg.ControlSocket, control.Request{Cmd: control.CmdStatus}, &st) != nil {
			return false
		}
		return len(st.Files) == 1 && st.Files[0].Inode != 0
	}, childLog)

	const attackers = 10
	pipelining := func(i int) string { return fmt.Sprintf("198.18.%d.1", i) }
	dictionary := func(i int) string { return fmt.Sprintf("198.18.%d.2", i) }
	batch := func(from, to int) (lines []string) {
		for i := from; i < to; i++ {
			lines = append(lines, pipeliningLine(pipelining(i)))
			for j := range 5 {
				lines = append(lines, dictLine(dictionary(i), j))
			}
		}
		return lines
	}
	// The first half is decided before the kill, the second half is
	// killed in the middle of its reading.
	appendLines(t, cfg.Logs[0], batch(0, attackers/2)...)
	waitFor(t, "the first half banned by the child", 10*time.Second, func() bool {
		var bans []ban.Ban
		err := control.Call(context.Background(), cfg.ControlSocket, control.Request{Cmd: control.CmdList}, &bans)
		return err == nil && len(bans) == attackers
	}, childLog)
	appendLines(t, cfg.Logs[0], batch(attackers/2, attackers)...)
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	killed = true

	td := startDaemon(t, cfg, "")
	waitFor(t, "every attacker banned after the restart", 10*time.Second, func() bool {
		return len(list(t, td.sock)) == 2*attackers
	}, td.logs)
	for i := range attackers {
		for _, c := range []struct {
			ip       string
			evidence int
		}{{pipelining(i), 1}, {dictionary(i), 5}} {
			ex := explain(t, td.sock, c.ip)
			if ex.Record == nil {
				t.Errorf("%s: not in the block list", c.ip)
			} else if ex.Record.Evidence != c.evidence {
				t.Errorf("%s: evidence %d, want %d (lines %q)", c.ip, ex.Record.Evidence, c.evidence, ex.Record.Lines)
			}
		}
	}
	st := statusOf(t, td.sock)
	t.Logf("after the kill: %d lines read again before the checkpoint (%d decisions not taken again, %d resumed), %d after it",
		st.Pipeline.Warm.Lines, st.Pipeline.Warm.Decisions, st.Pipeline.Warm.Resumed, st.Pipeline.Lines)
	if t.Failed() {
		t.Logf("child log:\n%s\nrestarted daemon log:\n%s", childLog, td.logs)
	}
}

type stringerFunc func() string

func (f stringerFunc) String() string { return f() }
