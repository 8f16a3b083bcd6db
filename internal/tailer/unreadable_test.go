package tailer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The child half of TestUnreadableLogSurvives: follow the file named by
// the environment, print every line to stdout, stop when stdin closes.
func TestUnreadableLogChild(t *testing.T) {
	path := os.Getenv("MXGUARD_TAILER_CHILD_PATH")
	if path == "" {
		t.Skip("helper process for TestUnreadableLogSurvives")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	out := make(chan Line)
	go func() {
		for l := range out {
			fmt.Println("LINE", l.Text)
		}
	}()
	cfg := Config{Paths: []string{path}, FromStart: true, Poll: os.Getenv("MXGUARD_TAILER_CHILD_POLL") != ""}
	if err := Follow(ctx, cfg, nil, out); err != nil {
		t.Fatal(err)
	}
}

// TestUnreadableLogSurvives: a log whose directory cannot be searched
// (mode 000 for an unprivileged reader, or a path component that is a
// file) is an error to log and retry, never the end of the process; the
// file is read once it is reachable again. The follower runs in a child
// process so that an os.Exit shows as a failure here rather than ending
// the test binary. Root is needed to run the child as nobody.
func TestUnreadableLogSurvives(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to run the follower as an unprivileged user")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		nobody bool // run the child as uid 65534 and chmod the directory 000
		poll   bool
	}{
		{"mode 000 inotify", true, false},
		{"mode 000 poll", true, true},
		{"not a directory inotify", false, false},
		{"not a directory poll", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			// Reachable by nobody down to root/logs.
			for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			bin := filepath.Join(root, "tailer.test")
			copyFile(t, exe, bin, 0o755)
			logs := filepath.Join(root, "logs")
			if err := os.Mkdir(logs, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(logs, "mail.log")
			w := newLogWriter(t, path)
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			// hide makes path unreachable for the child; show undoes it.
			hide, show := func() {
				if err := os.Chmod(logs, 0); err != nil {
					t.Fatal(err)
				}
			}, func() {
				if err := os.Chmod(logs, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if !c.nobody {
				hide = func() {
					if err := os.Rename(logs, logs+".away"); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(logs, nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				show = func() {
					if err := os.Remove(logs); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(logs+".away", logs); err != nil {
						t.Fatal(err)
					}
				}
			}
			defer func() {
				if _, err := os.Stat(logs + ".away"); err == nil {
					show()
				}
				_ = os.Chmod(logs, 0o755) // let TempDir's cleanup in
			}()

			w.lines(1, 5)
			hide() // unreachable from the start
			cmd := exec.Command(bin, "-test.run=^TestUnreadableLogChild$")
			cmd.Env = append(os.Environ(), "MXGUARD_TAILER_CHILD_PATH="+path)
			if c.poll {
				cmd.Env = append(cmd.Env, "MXGUARD_TAILER_CHILD_POLL=1")
			}
			if c.nobody {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 100)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if s, ok := strings.CutPrefix(sc.Text(), "LINE "); ok {
						lines <- s
					}
				}
			}()
			var got []Line
			// expect reads n more lines, or fails if the child exits.
			expect := func(n int) {
				t.Helper()
				deadline := time.After(10 * time.Second)
				for range n {
					select {
					case s, ok := <-lines:
						if !ok {
							t.Fatalf("child exited after %d lines: %v\n%s", len(got), cmd.Wait(), stderr.String())
						}
						got = append(got, Line{Text: s})
					case <-deadline:
						t.Fatalf("timed out with %d lines", len(got))
					}
				}
			}
			time.Sleep(300 * time.Millisecond) // a few retries while unreachable
			select {
			case s, ok := <-lines:
				t.Fatalf("line %q (child alive %v) while the file was unreachable", s, ok)
			default:
			}
			show()
			expect(5)
			// Long enough for any watcher to be watching the file again
			// (nxadm/tail polled every 250 ms) before it becomes unreachable.
			time.Sleep(time.Second)
			hide()
			w.lines(6, 10) // through the writer's open descriptor
			time.Sleep(500 * time.Millisecond)
			show()
			w.lines(11, 15)
			expect(10)
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v\n%s", err, stderr.String())
			}
			checkSeq(t, got, 1, 15)
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
