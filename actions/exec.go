package actions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
)

// ExecRunner runs an external program with an argument vector (never a
// shell string). stdin may be nil. It returns the program's stdout.
// The ipset and access-map backends run every program through one, so a
// test can run them inside a network namespace and --dry-run can print
// them instead.
type ExecRunner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// ExecOS runs programs for real. Prefix, when set, is put in front of every
// command (tests use []string{"ip", "netns", "exec", NS}).
type ExecOS struct {
	Prefix []string
}

// Run implements ExecRunner. A failure names the command and carries the
// program's stderr.
func (r ExecOS) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
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
			return stdout.Bytes(), fmt.Errorf("%s: %w: %s", execXQuote(name, args), err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w", execXQuote(name, args), err)
	}
	return stdout.Bytes(), nil
}

// ExecPrinter is the dry-run runner: it writes each command (and its
// standard input as a here-document) to W and runs nothing. Output is
// empty and every command "succeeds".
type ExecPrinter struct {
	mu sync.Mutex
	W  io.Writer
}

// Run implements ExecRunner.
func (p *ExecPrinter) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	b.WriteString(execXQuote(name, args))
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

// execXQuote renders an argument vector for humans (dry-run output and
// error messages). Arguments are never passed through a shell.
func execXQuote(name string, args []string) string {
	parts := make([]string, 0, 1+len(args))
	for _, a := range append([]string{name}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`;&|<>*?()[]{}") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// errInvalidPrefix is wrapped by every backend when Apply or Revoke gets a
// prefix that must never reach a firewall or map file.
var errInvalidPrefix = errors.New("invalid prefix")

// execXCheckPrefix re-validates the form of a prefix before it reaches an
// external program: it must be valid, canonical (no host bits), not an
// IPv4-mapped IPv6 address, not a zone, and not /0. Breadth and allowlists
// are the Manager's job.
func execXCheckPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%w %q", errInvalidPrefix, p.String())
	case p.Addr().Is4In6():
		return fmt.Errorf("%w %s: IPv4-mapped IPv6 address, unmap it first", errInvalidPrefix, p)
	case p.Addr().Zone() != "":
		return fmt.Errorf("%w %s: has a zone", errInvalidPrefix, p)
	case p.Masked() != p:
		return fmt.Errorf("%w %s: host bits set (want %s)", errInvalidPrefix, p, p.Masked())
	case p.Bits() == 0:
		return fmt.Errorf("%w %s: refusing to ban everything", errInvalidPrefix, p)
	}
	return nil
}

// execXLogger turns a nil logger into a discarding one.
func execXLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
