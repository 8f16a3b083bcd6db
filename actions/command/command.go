// Package command runs external programs (ipset, postmap) with argument
// vectors, never a shell, or prints them instead in a dry run.
package command

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
)

// Runner runs an external program with an argument vector (never a
// shell string). stdin may be nil. It returns the program's stdout.
// The ipset and access-map backends run every program through one, so a
// test can run them inside a network namespace and --dry-run can print
// them instead.
type Runner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// OS runs programs for real. Prefix, when set, is put in front of every
// command (tests use []string{"ip", "netns", "exec", NS}).
type OS struct {
	Prefix []string
}

// Run implements Runner. A failure names the command and carries the
// program's stderr.
func (r OS) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	argv := append(append(append([]string(nil), r.Prefix...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 500 {
			msg = msg[:500] + "..."
		}
		if msg != "" {
			return stdout.Bytes(), fmt.Errorf("%s: %w: %s", Quote(name, args), err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w", Quote(name, args), err)
	}
	return stdout.Bytes(), nil
}

// Printer is the dry-run runner: it writes each command (and its
// standard input as a here-document) to W and runs nothing. Output is
// empty and every command "succeeds".
type Printer struct {
	mu sync.Mutex
	W  io.Writer
}

// Run implements Runner.
func (p *Printer) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	b.WriteString(Quote(name, args))
	if stdin != nil {
		b.WriteString(" <<'EOF'\n")
		b.Write(stdin)
		if len(stdin) > 0 && stdin[len(stdin)-1] != '\n' {
			b.WriteByte('\n')
		}
		b.WriteString("EOF")
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.W, b.String())
	return nil, err
}

// Quote renders an argument vector for humans (dry-run output and
// error messages). Arguments are never passed through a shell.
func Quote(name string, args []string) string {
	parts := make([]string, 0, 1+len(args))
	for _, a := range append([]string{name}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`;&|<>*?()[]{}") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
