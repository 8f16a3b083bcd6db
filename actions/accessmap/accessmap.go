// Package accessmap carries bans out as a Postfix access table
// (check_client_access), rewritten atomically and compiled with postmap.
package accessmap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/command"
)

// Config configures the Postfix access map action. Use the map
// in main.cf, e.g.
//
//	smtpd_client_restrictions = check_client_access hash:/etc/postfix/mxguard_access
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Path is the managed file; mxguard owns it and rewrites it whole.
	// Default: /etc/postfix/mxguard_access.
	Path string `yaml:"path"`
	// Type is the Postfix map type: hash, lmdb, cdb (indexed with postmap)
	// or cidr (read as text by Postfix). Default: hash.
	Type string `yaml:"type"`
	// Postmap is the postmap program. Default: postmap (from PATH).
	Postmap string `yaml:"postmap"`
	// ConfigDir is the Postfix configuration directory postmap reads
	// (postmap -c), for a second instance such as one made by postmulti.
	// Default: empty, Postfix's own default (/etc/postfix, or MAIL_CONFIG).
	ConfigDir string `yaml:"config_dir"`
	// Debounce is how long changes are collected before one rewrite.
	// Default: 2s.
	Debounce time.Duration `yaml:"debounce"`
}

// DefaultConfig returns the default (disabled) configuration.
func DefaultConfig() Config {
	return Config{Path: "/etc/postfix/mxguard_access", Type: "hash", Postmap: "postmap", Debounce: 2 * time.Second}
}

// Validate reports every problem in the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Path == "" || !filepath.IsAbs(c.Path) {
		errs = append(errs, fmt.Errorf("path %q: want an absolute path", c.Path))
	}
	switch c.Type {
	case "hash", "lmdb", "cdb", "cidr":
	default:
		errs = append(errs, fmt.Errorf("type %q: want hash, lmdb, cdb or cidr", c.Type))
	}
	if c.Type != "cidr" && c.Postmap == "" {
		errs = append(errs, errors.New("postmap: empty"))
	}
	if c.ConfigDir != "" && !filepath.IsAbs(c.ConfigDir) {
		errs = append(errs, fmt.Errorf("config_dir %q: want an absolute path", c.ConfigDir))
	}
	if c.Debounce < 0 || c.Debounce > time.Hour {
		errs = append(errs, fmt.Errorf("debounce %s: want 0..1h", c.Debounce))
	}
	return errors.Join(errs...)
}

// Options are the run-time dependencies of New.
type Options struct {
	Logger *slog.Logger // nil: discard
	// DryRun, when set, receives the file content and the postmap command
	// instead of writing/running them.
	DryRun io.Writer
	// Runner runs postmap (nil: command.OS{}).
	Runner command.Runner
}

// maxReason bounds the reject text taken from a ban.
const maxReason = 200

// Map keeps a Postfix access table with one REJECT line per ban.
// Apply and Revoke change an in-memory set and schedule a rewrite after
// Debounce, so a burst of bans costs one rewrite and one postmap run.
//
// Keys: cidr tables take any prefix. hash/lmdb/cdb tables are exact-match
// tables that Postfix looks up with the client address and then with its
// shortened forms (1.2.3.4, 1.2.3, 1.2, 1), so IPv4 /32, /24, /16 and /8
// are written as those keys; other IPv4 lengths are widened to the next
// octet boundary's keys when that is at most 256 keys (a /22 becomes four
// /24 keys, a /30 four addresses), else skipped with a warning. IPv6 in
// indexed tables: only single addresses (/128); wider prefixes are
// skipped with a warning (use type cidr or the firewall for those).
type Map struct {
	cfg   Config
	log   *slog.Logger
	run   command.Runner
	dry   io.Writer
	mu    sync.Mutex
	bans  map[netip.Prefix]string // prefix → sanitised reason
	gen   uint64                  // bumped on every change
	timer *time.Timer
	// writeMu serialises rewrites; written is the gen last written.
	writeMu sync.Mutex
	written uint64
	lastErr error
	closed  bool
}

var _ ban.Action = (*Map)(nil)

// New checks the configuration, that the directory is writable
// and that postmap can be found (for indexed types).
func New(cfg Config, opts Options) (*Map, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("postfix access map config: %w", err)
	}
	a := &Map{cfg: cfg, log: orDiscard(opts.Logger).With("action", "postfix_access"),
		run: opts.Runner, dry: opts.DryRun, bans: map[netip.Prefix]string{}}
	if a.dry != nil {
		a.run = &command.Printer{W: a.dry}
		return a, nil
	}
	if a.run == nil {
		a.run = command.OS{}
	}
	if cfg.Type != "cidr" {
		if _, err := exec.LookPath(cfg.Postmap); err != nil {
			return nil, fmt.Errorf("postfix access map: postmap program %q not found (install postfix or set postmap:): %w", cfg.Postmap, err)
		}
	}
	dir := filepath.Dir(cfg.Path)
	f, err := os.CreateTemp(dir, ".mxguard-probe-*")
	if err != nil {
		return nil, fmt.Errorf("postfix access map: directory %s is not writable: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return a, nil
}

// Name implements ban.Action.
func (a *Map) Name() string { return "postfix_access" }

// sanitize keeps printable ASCII, folds runs of space, and
// bounds the length, so a reason can never break the map syntax.
func sanitize(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r <= ' ' || r > '~' {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() >= maxReason {
			break
		}
	}
	return b.String()
}

// Apply implements ban.Action.
func (a *Map) Apply(_ context.Context, b ban.Ban) error {
	if err := ban.CheckPrefix(b.Prefix); err != nil {
		return fmt.Errorf("postfix access map: %w", err)
	}
	reason := sanitize(b.Reason)
	a.mu.Lock()
	defer a.mu.Unlock()
	if old, ok := a.bans[b.Prefix]; ok && old == reason {
		return a.failedLocked()
	}
	a.bans[b.Prefix] = reason
	a.changedLocked()
	return a.failedLocked()
}

// failedLocked reports a failed earlier rewrite, so that the manager
// retries and shows the error in status until a rewrite succeeds (the
// timer keeps retrying the rewrite meanwhile).
func (a *Map) failedLocked() error {
	if a.lastErr != nil {
		return fmt.Errorf("postfix access map %s not up to date: %w", a.cfg.Path, a.lastErr)
	}
	return nil
}

// Revoke implements ban.Action.
func (a *Map) Revoke(_ context.Context, p netip.Prefix) error {
	if err := ban.CheckPrefix(p); err != nil {
		return fmt.Errorf("postfix access map: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.bans[p]; !ok {
		return a.failedLocked()
	}
	delete(a.bans, p)
	a.changedLocked()
	return a.failedLocked()
}

// Sync implements ban.Action: the set becomes exactly active, and the file is
// rewritten now (start-up must leave a correct map behind).
func (a *Map) Sync(ctx context.Context, active []ban.Ban) error {
	var errs []error
	a.mu.Lock()
	a.bans = make(map[netip.Prefix]string, len(active))
	for _, b := range active {
		if err := ban.CheckPrefix(b.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("postfix access map: sync: %w", err))
			continue
		}
		a.bans[b.Prefix] = sanitize(b.Reason)
	}
	a.gen++
	a.mu.Unlock()
	errs = append(errs, a.Flush(ctx))
	return errors.Join(errs...)
}

// changedLocked records a change and arms the debounce timer.
func (a *Map) changedLocked() {
	a.gen++
	a.armLocked(a.cfg.Debounce)
}

// flushTimeout bounds one background rewrite (postmap included),
// so a hung postmap cannot block the worker or shutdown for ever.
const flushTimeout = time.Minute

// armLocked schedules a background rewrite after d. A failed rewrite
// re-arms itself with a growing delay (up to a minute) until one succeeds.
func (a *Map) armLocked(d time.Duration) {
	if a.timer != nil || a.closed {
		return
	}
	a.timer = time.AfterFunc(d, func() {
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		defer cancel()
		if err := a.Flush(ctx); err != nil {
			a.log.Error("rewrite failed; retrying", "file", a.cfg.Path, "err", err)
			a.mu.Lock()
			next := min(max(2*d, 100*time.Millisecond), time.Minute)
			a.armLocked(next)
			a.mu.Unlock()
		}
	})
}

// Flush writes the map now if it changed since the last write and runs
// postmap. It returns the error of this write, or of the last failed
// background write if nothing changed since.
func (a *Map) Flush(ctx context.Context) error {
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	gen := a.gen
	if gen == a.written && a.lastErr == nil {
		a.mu.Unlock()
		return nil
	}
	content, skipped := a.renderLocked()
	a.mu.Unlock()
	for _, s := range skipped {
		a.log.Warn("ban not expressible in this map type, skipped", "prefix", s, "type", a.cfg.Type)
	}
	err := a.write(ctx, content)
	a.mu.Lock()
	a.lastErr = err
	if err == nil {
		a.written = gen
	}
	a.mu.Unlock()
	return err
}

// renderLocked produces the whole file. Lines are sorted by prefix so the
// output is deterministic; the first ban for a key wins.
func (a *Map) renderLocked() (content []byte, skipped []netip.Prefix) {
	ps := make([]netip.Prefix, 0, len(a.bans))
	for p := range a.bans {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Generated by mxguard: DO NOT EDIT. Rewritten on every ban change.\n# %d bans. Postfix map type %s:%s\n", len(ps), a.cfg.Type, a.cfg.Path)
	seen := make(map[string]bool, len(ps))
	for _, p := range ps {
		keys := keys(p, a.cfg.Type)
		if keys == nil {
			skipped = append(skipped, p)
			continue
		}
		text := "REJECT mxguard"
		if r := a.bans[p]; r != "" {
			text += ": " + r
		}
		for _, k := range keys {
			if seen[k] {
				continue
			}
			seen[k] = true
			fmt.Fprintf(&b, "%s\t%s\n", k, text)
		}
	}
	return b.Bytes(), skipped
}

// keys returns the lookup keys for a prefix in a map type, or
// nil when the prefix cannot be expressed.
func keys(p netip.Prefix, typ string) []string {
	if typ == "cidr" {
		if p.IsSingleIP() {
			return []string{p.Addr().String()}
		}
		return []string{p.String()}
	}
	if !p.Addr().Is4() {
		if p.IsSingleIP() {
			return []string{p.Addr().String()}
		}
		return nil
	}
	// Widen to the next octet boundary: 8, 16, 24 or 32 bits.
	octets := (p.Bits() + 7) / 8
	if n := octets*8 - p.Bits(); n > 8 {
		return nil
	}
	count := 1 << (octets*8 - p.Bits())
	a := p.Addr().As4()
	keys := make([]string, 0, count)
	for i := range count {
		parts := make([]string, octets)
		for j := range octets {
			v := int(a[j])
			if j == octets-1 {
				v += i
			}
			parts[j] = fmt.Sprint(v)
		}
		keys = append(keys, strings.Join(parts, "."))
	}
	return keys
}

// write replaces the file atomically (temp file in the same directory,
// fsync, rename, fsync of the directory) and runs postmap.
func (a *Map) write(ctx context.Context, content []byte) error {
	if a.dry != nil {
		if _, err := fmt.Fprintf(a.dry, "# would write %s:\n%s", a.cfg.Path, content); err != nil {
			return err
		}
	} else if err := writeFile(a.cfg.Path, content); err != nil {
		return fmt.Errorf("postfix access map: %w", err)
	}
	if a.cfg.Type == "cidr" {
		return nil
	}
	if _, err := a.run.Run(ctx, nil, a.cfg.Postmap, a.postmapArgs()...); err != nil {
		return fmt.Errorf("postfix access map: %w", err)
	}
	a.log.Debug("map rewritten", "file", a.cfg.Path, "bytes", len(content))
	return nil
}

// postmapArgs are the arguments that index the map.
func (a *Map) postmapArgs() []string {
	var args []string
	if a.cfg.ConfigDir != "" {
		args = append(args, "-c", a.cfg.ConfigDir)
	}
	return append(args, a.cfg.Type+":"+a.cfg.Path)
}

func writeFile(path string, content []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(content); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Close implements ban.Action: pending changes are written.
func (a *Map) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	return a.Flush(context.Background())
}

// orDiscard turns a nil logger into a discarding one.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
