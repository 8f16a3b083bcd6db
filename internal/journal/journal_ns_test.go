package journal_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/journal"
	"github.com/mxguard/mxguard/internal/pipeline"
	"github.com/mxguard/mxguard/internal/tailer"
)

const (
	journaldPath = "/lib/systemd/systemd-journald"
	roleEnv      = "MXGUARD_JOURNAL_TEST_ROLE"
)

// TestRealJournal runs a real systemd-journald in a mount namespace of its
// own (the test binary again, under unshare -m), writes the lab's captured
// Postfix lines to it with their identifiers and pids, and follows it.
func TestRealJournal(t *testing.T) {
	if os.Getenv(roleEnv) == "journald" {
		realJournal(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs systemd-journald in a mount namespace")
	}
	for _, p := range []string{journaldPath, "/usr/bin/journalctl", "/usr/bin/unshare"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s: %v", p, err)
		}
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", os.Args[0],
		"-test.run=^TestRealJournal$", "-test.v", "-test.timeout=100s")
	cmd.Env = append(os.Environ(), roleEnv+"=journald")
	out, err := cmd.CombinedOutput()
	t.Logf("namespace child:\n%s", out)
	if err != nil {
		t.Fatalf("namespace child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestRealJournal") {
		t.Fatal("namespace child did not pass")
	}
}

// realJournal is the child's side: journald, entries, follower, pipeline.
func realJournal(t *testing.T) {
	for _, dir := range []string{"/run/systemd", "/run/log", "/var/log/journal"} {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", dir, err)
		}
	}
	if err := os.MkdirAll("/run/systemd/journal", 0o755); err != nil {
		t.Fatal(err)
	}
	jd := exec.Command(journaldPath)
	if err := jd.Start(); err != nil {
		t.Fatalf("start journald: %v", err)
	}
	t.Cleanup(func() { _ = jd.Process.Kill(); _ = jd.Wait() })
	waitFor(t, "journald socket", func() bool {
		_, err := os.Stat("/run/systemd/journal/socket")
		return err == nil
	})

	lab := labLines(t)
	attacker := "203.0.113.31"
	var first, second []labLine
	for _, l := range lab {
		if strings.Contains(l.msg, attacker) {
			first = append(first, l)
		}
	}
	// The second half of the attacker's lines come after a restart, as
	// postfix-in (a second instance), with non-Postfix noise between.
	half := len(first) / 2
	first, second = first[:half], first[half:]
	for i := range second {
		second[i].ident = strings.Replace(second[i].ident, "postfix/", "postfix-in/", 1)
	}

	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cursors, err := journal.NewBoltCursors(db)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	writeEntries(t, "cron", []labLine{{ident: "CRON", pid: "77", msg: "noise before"}})
	writeEntries(t, "first", first)

	mgr, pipe := newPipeline(t, log)
	got := runFollower(t, cursors, pipe, log, len(first))
	if len(got) != len(first) {
		t.Fatalf("first run read %d lines, want %d", len(got), len(first))
	}
	for i, l := range got {
		if !strings.HasSuffix(l, first[i].ident+"["+first[i].pid+"]: "+first[i].msg) ||
			!regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 `).MatchString(l) {
			t.Errorf("line %d = %q, want an RFC 3339 UTC line ending in %s[%s]: %s", i, l, first[i].ident, first[i].pid, first[i].msg)
		}
	}
	bans, err := mgr.List(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 1 || bans[0].Prefix.Addr().String() != attacker {
		t.Fatalf("bans after the first run = %+v, want %s", bans, attacker)
	}

	// Stopped: more entries arrive, journald rotates and vacuums nothing
	// we still need; the restart reads exactly the new Postfix entries.
	writeEntries(t, "cron", []labLine{{ident: "CRON", pid: "78", msg: "noise between"}})
	if out, err := exec.Command("journalctl", "--rotate").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --rotate: %v %s", err, out)
	}
	writeEntries(t, "second", second)
	_, pipe2 := newPipeline(t, log)
	got = runFollower(t, cursors, pipe2, log, len(second))
	if len(got) != len(second) {
		t.Fatalf("after restart read %d lines, want %d (none lost, none twice): %q", len(got), len(second), got)
	}
	for i, l := range got {
		if !strings.HasSuffix(l, second[i].ident+"["+second[i].pid+"]: "+second[i].msg) {
			t.Errorf("after restart line %d = %q, want %s", i, l, second[i].msg)
		}
	}

	// A cursor that names no entry (vacuumed) resumes at the oldest.
	if err := cursors.Save("journal", "s=0123456789abcdef0123456789abcdef;i=5;b=0123456789abcdef0123456789abcdef;m=1;t=1;x=1"); err != nil {
		t.Fatal(err)
	}
	_, pipe3 := newPipeline(t, log)
	got = runFollower(t, cursors, pipe3, log, len(first)+len(second))
	if len(got) != len(first)+len(second) {
		t.Fatalf("vanished cursor: read %d lines, want all %d", len(got), len(first)+len(second))
	}
	// A cursor journalctl cannot parse also resumes at the oldest.
	if err := cursors.Save("journal", "garbage"); err != nil {
		t.Fatal(err)
	}
	_, pipe4 := newPipeline(t, log)
	got = runFollower(t, cursors, pipe4, log, len(first)+len(second))
	if len(got) != len(first)+len(second) {
		t.Fatalf("invalid cursor: read %d lines, want all %d", len(got), len(first)+len(second))
	}
}

type labLine struct{ ident, pid, msg string }

var labRE = regexp.MustCompile(`^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ ([^\[:]+)\[(\d+)\]: (.*)$`)

// labLines are the Postfix lines of the lab's capture.
func labLines(t *testing.T) []labLine {
	t.Helper()
	f, err := os.Open("../../testdata/lab/mail.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []labLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := labRE.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, labLine{m[1], m[2], m[3]})
		}
	}
	if len(out) == 0 {
		t.Fatal("no lines in testdata/lab/mail.log")
	}
	return out
}

// writeEntries logs each line natively (logger --journald) with its
// identifier and pid, then waits until journald has them all.
func writeEntries(t *testing.T, what string, lines []labLine) {
	t.Helper()
	for _, l := range lines {
		cmd := exec.Command("logger", "--journald")
		cmd.Stdin = strings.NewReader(fmt.Sprintf("SYSLOG_IDENTIFIER=%s\nSYSLOG_PID=%s\nSYSLOG_FACILITY=2\nMESSAGE=%s\n", l.ident, l.pid, l.msg))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("logger %s: %v %s", what, err, out)
		}
	}
	last := lines[len(lines)-1]
	waitFor(t, what+" entries in the journal", func() bool {
		out, _ := exec.Command("journalctl", "-q", "-o", "cat", "-n", "1", "SYSLOG_IDENTIFIER="+last.ident).Output()
		return strings.TrimSpace(string(out)) == last.msg
	})
}

func newPipeline(t *testing.T, log *slog.Logger) (*ban.Manager, *pipeline.Pipeline) {
	t.Helper()
	mgr, err := ban.NewManager(ban.ManagerConfig{Ban: ban.DefaultConfig()}, store.NewMemory(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	det, err := detectors.New(detectors.DefaultConfig(), log)
	if err != nil {
		t.Fatal(err)
	}
	return mgr, pipeline.New(det, mgr, log)
}

// recorder is the follower as the pipeline sees it, keeping what it sent.
type recorder struct {
	*journal.Follower
	lines chan string
}

func (r *recorder) Run(ctx context.Context, out chan<- tailer.Line) error {
	mid := make(chan tailer.Line)
	errc := make(chan error, 1)
	go func() { errc <- r.Follower.Run(ctx, mid) }()
	for {
		select {
		case l := <-mid:
			r.lines <- l.Text
			out <- l
		case err := <-errc:
			return err
		}
	}
}

// runFollower follows the journal from the saved cursor through the
// pipeline until want lines came and a moment passed without more, then
// stops (saving the cursor) and returns the lines.
func runFollower(t *testing.T, cursors *journal.BoltCursors, pipe *pipeline.Pipeline, log *slog.Logger, want int) []string {
	t.Helper()
	f, err := journal.New(journal.Config{Spec: "journal", FromStart: true, Logger: log}, cursors)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Follower: f, lines: make(chan string, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pipe.Follow(ctx, rec, time.UTC) }()
	var got []string
	deadline := time.After(20 * time.Second)
	for quiet := false; !quiet; {
		select {
		case l := <-rec.lines:
			got = append(got, l)
		case <-time.After(time.Second):
			quiet = len(got) >= want
		case <-deadline:
			quiet = true
		}
	}
	for pipe.Stats().Lines < uint64(len(got)) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow: %v", err)
	}
	return got
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for range 200 {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
