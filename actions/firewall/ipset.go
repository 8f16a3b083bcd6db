package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/command"
)

// IPSetConfig configures the ipset action: two kernel sets (IPv4 and
// IPv6, both hash:net with per-entry timeouts) and one iptables rule per
// set in the shared chain. This is the backend for 100k+ bans: the packet
// path does one hash lookup per prefix length present instead of walking
// one rule per ban.
type IPSetConfig struct {
	Enabled bool `yaml:"enabled"`
	// SetName is the base name; the sets are SetName-v4 and SetName-v6
	// (SetName-v4-new etc. are used while Sync rebuilds). Default: mxguard.
	SetName string `yaml:"set_name"`
	// MaxElem is the maximum number of entries per set. Default: 1048576.
	MaxElem int `yaml:"maxelem"`
	// HashSize is the initial hash size (grows as needed). Default: 65536.
	HashSize int `yaml:"hashsize"`
	// IPSetPath is the ipset program. Default: ipset (from PATH).
	IPSetPath           string `yaml:"ipset_path"`
	IPTablesChainConfig `yaml:",inline"`
}

// DefaultIPSetConfig returns the default (disabled) ipset config.
func DefaultIPSetConfig() IPSetConfig {
	return IPSetConfig{
		SetName:             "mxguard",
		MaxElem:             1 << 20,
		HashSize:            1 << 16,
		IPSetPath:           "ipset",
		IPTablesChainConfig: DefaultIPTablesChainConfig(),
	}
}

// ipsetMaxTimeout is the largest per-entry timeout the kernel accepts
// (UINT_MAX/1000 seconds, about 24.8 days).
const ipsetMaxTimeout = 2147483

var ipsetName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,24}$`)

// Validate reports every problem in the configuration.
func (c IPSetConfig) Validate() error {
	var errs []error
	if !ipsetName.MatchString(c.SetName) {
		errs = append(errs, fmt.Errorf("set_name %q: want 1-24 letters, digits, '_', '.' or '-'", c.SetName))
	}
	if c.MaxElem < 1 {
		errs = append(errs, fmt.Errorf("maxelem %d: must be positive", c.MaxElem))
	}
	if c.HashSize < 64 {
		errs = append(errs, fmt.Errorf("hashsize %d: must be at least 64", c.HashSize))
	}
	if c.IPSetPath == "" {
		errs = append(errs, errors.New("ipset_path: empty"))
	}
	if err := c.IPTablesChainConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// IPSetOptions are the run-time dependencies of NewIPSet.
type IPSetOptions struct {
	Logger *slog.Logger // nil: discard
	// DryRun, when set, receives the ipset and iptables commands (and the
	// `ipset restore` script) that would run; nothing is executed.
	DryRun io.Writer
	// Runner runs ipset (nil: command.OS{}). Tests run it in a namespace.
	Runner command.Runner
	Now    func() time.Time // nil: time.Now
}

// IPSet bans prefixes by adding them to a hash:net set with a timeout of
// Until-now (capped at ipsetMaxTimeout), so the kernel drops expired
// entries even if the daemon is down. Single addresses are stored as /32
// or /128 entries of the same hash:net set: one set and one rule per
// family, and a lookup cost that grows with the number of distinct
// prefix lengths (typically 1-3), not with the number of bans.
type IPSet struct {
	cfg  IPSetConfig
	c    *iptablesChain
	run  command.Runner
	log  *slog.Logger
	now  func() time.Time
	sets map[bool]*ipsetSet // key: is IPv4
}

type ipsetSet struct {
	name, tmp, family string
	fam               *iptablesFamily
	ready             bool // set created and rule in place (guarded by c.mu)
}

var _ ban.Action = (*IPSet)(nil)

// NewIPSet checks the configuration and builds the action. It runs
// nothing but `iptables -V`; the first Sync or Apply creates sets, chain,
// jump and rules.
func NewIPSet(cfg IPSetConfig, opts IPSetOptions) (*IPSet, error) {
	cfg.Target = strings.ToUpper(cfg.Target)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ipset config: %w", err)
	}
	log := orDiscard(opts.Logger).With("action", "ipset")
	c, err := newIPTablesXChain(cfg.IPTablesChainConfig, log, opts.DryRun)
	if err != nil {
		return nil, err
	}
	a := &IPSet{cfg: cfg, c: c, log: log, run: opts.Runner, now: opts.Now}
	if opts.DryRun != nil {
		a.run = &command.Printer{W: opts.DryRun}
	} else if a.run == nil {
		a.run = command.OS{}
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.sets = map[bool]*ipsetSet{true: {name: cfg.SetName + "-v4", tmp: cfg.SetName + "-v4-new", family: "inet", fam: c.v4}}
	if c.v6 != nil {
		a.sets[false] = &ipsetSet{name: cfg.SetName + "-v6", tmp: cfg.SetName + "-v6-new", family: "inet6", fam: c.v6}
	}
	return a, nil
}

// Name implements ban.Action.
func (a *IPSet) Name() string { return "ipset" }

// SetNames returns the names of the live sets (IPv4 first).
func (a *IPSet) SetNames() []string {
	out := []string{a.sets[true].name}
	if s := a.sets[false]; s != nil {
		out = append(out, s.name)
	}
	return out
}

func (a *IPSet) createArgs(name, family string) []string {
	return []string{"create", name, "hash:net", "family", family,
		"hashsize", strconv.Itoa(a.cfg.HashSize), "maxelem", strconv.Itoa(a.cfg.MaxElem), "timeout", "0"}
}

func (a *IPSet) ruleSpec(s *ipsetSet) []string {
	return a.c.ruleSpec("", "-m", "set", "--match-set", s.name, "src")
}

func (a *IPSet) ipset(ctx context.Context, stdin []byte, args ...string) error {
	_, err := a.run.Run(ctx, stdin, a.cfg.IPSetPath, args...)
	return err
}

// ensureLocked creates the set and its rule once.
func (a *IPSet) ensureLocked(ctx context.Context, s *ipsetSet) error {
	if s.ready {
		return nil
	}
	if err := a.ipset(ctx, nil, append(a.createArgs(s.name, s.family), "-exist")...); err != nil {
		return fmt.Errorf("create set %s: %w", s.name, err)
	}
	if err := a.c.addLocked(s.fam, a.ruleSpec(s)); err != nil {
		return err
	}
	s.ready = true
	return nil
}

// timeout returns the entry timeout for a ban; ok is false for an expired
// ban. A zero Until means no expiry (timeout 0). A ban longer than the
// kernel's largest timeout also gets 0 (no kernel expiry) rather than a
// capped one that would silently lift it early: the manager revokes it
// when it ends, and restore re-syncs after a restart.
func (a *IPSet) timeout(b ban.Ban, now time.Time) (secs int64, ok bool) {
	if b.Until.IsZero() {
		return 0, true
	}
	d := b.Until.Sub(now)
	if d <= 0 {
		return 0, false
	}
	secs = int64((d + time.Second - 1) / time.Second)
	if secs > ipsetMaxTimeout {
		return 0, true
	}
	return secs, true
}

func (a *IPSet) set(p netip.Prefix) (*ipsetSet, error) {
	s := a.sets[p.Addr().Is4()]
	if s == nil {
		return nil, fmt.Errorf("%s: IPv6 is disabled (ipv6: false)", p)
	}
	return s, nil
}

// Apply implements ban.Action: `ipset add SET PREFIX timeout N -exist` (which
// also refreshes the timeout of an existing entry). An already expired
// ban is not added.
func (a *IPSet) Apply(ctx context.Context, b ban.Ban) error {
	if err := ban.CheckPrefix(b.Prefix); err != nil {
		return fmt.Errorf("ipset: %w", err)
	}
	s, err := a.set(b.Prefix)
	if err != nil {
		return fmt.Errorf("ipset: %w", err)
	}
	secs, ok := a.timeout(b, a.now())
	if !ok {
		a.log.Debug("expired ban not added", "prefix", b.Prefix, "until", b.Until)
		return nil
	}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	if err := a.ensureLocked(ctx, s); err != nil {
		return fmt.Errorf("ipset: ban %s: %w", b.Prefix, err)
	}
	args := []string{"add", s.name, b.Prefix.String(), "timeout", strconv.FormatInt(secs, 10), "-exist"}
	if err := a.ipset(ctx, nil, args...); err != nil {
		// The set may have been destroyed behind our back: heal once.
		s.ready = false
		if err2 := a.ensureLocked(ctx, s); err2 != nil {
			return fmt.Errorf("ipset: ban %s: %w", b.Prefix, err)
		}
		if err := a.ipset(ctx, nil, args...); err != nil {
			return fmt.Errorf("ipset: ban %s: %w", b.Prefix, err)
		}
	}
	a.log.Debug("entry added", "prefix", b.Prefix, "set", s.name, "timeout", secs)
	return nil
}

// Revoke implements ban.Action: `ipset del SET PREFIX -exist`.
func (a *IPSet) Revoke(ctx context.Context, p netip.Prefix) error {
	if err := ban.CheckPrefix(p); err != nil {
		return fmt.Errorf("ipset: %w", err)
	}
	s, err := a.set(p)
	if err != nil {
		return fmt.Errorf("ipset: %w", err)
	}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	err = a.ipset(ctx, nil, "del", s.name, p.String(), "-exist")
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return nil // no set, nothing banned
	}
	if err != nil {
		return fmt.Errorf("ipset: unban %s: %w", p, err)
	}
	return nil
}

// Sync implements ban.Action. It builds a fresh set per family from active
// with one `ipset -exist restore` script (create live and -new sets, flush
// -new, add every entry, swap -new with live, destroy -new), so the live
// set changes in one atomic swap and 100k entries take one process. Then
// chain, jump and set rules are reconciled.
func (a *IPSet) Sync(ctx context.Context, active []ban.Ban) error {
	now := a.now()
	var errs []error
	var script bytes.Buffer
	type famScript struct {
		s       *ipsetSet
		entries []string
	}
	fams := []*famScript{{s: a.sets[true]}}
	if s := a.sets[false]; s != nil {
		fams = append(fams, &famScript{s: s})
	}
	for _, b := range active {
		if err := ban.CheckPrefix(b.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("ipset: sync: %w", err))
			continue
		}
		secs, ok := a.timeout(b, now)
		if !ok {
			continue
		}
		i := 0
		if !b.Prefix.Addr().Is4() {
			if len(fams) < 2 {
				errs = append(errs, fmt.Errorf("ipset: sync: %s: IPv6 is disabled", b.Prefix))
				continue
			}
			i = 1
		}
		fams[i].entries = append(fams[i].entries, b.Prefix.String()+" timeout "+strconv.FormatInt(secs, 10))
	}
	for _, f := range fams {
		s := f.s
		script.WriteString(strings.Join(a.createArgs(s.name, s.family), " ") + "\n")
		script.WriteString(strings.Join(a.createArgs(s.tmp, s.family), " ") + "\n")
		script.WriteString("flush " + s.tmp + "\n")
		for _, e := range f.entries {
			script.WriteString("add " + s.tmp + " " + e + "\n")
		}
		script.WriteString("swap " + s.tmp + " " + s.name + "\n")
		script.WriteString("destroy " + s.tmp + "\n")
	}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := a.ipset(ctx, script.Bytes(), "-exist", "restore"); err != nil {
		for _, f := range fams {
			_ = a.ipset(context.WithoutCancel(ctx), nil, "destroy", f.s.tmp) // best effort
		}
		return errors.Join(append(errs, fmt.Errorf("ipset: sync: restore: %w", err))...)
	}
	for _, f := range fams {
		s := f.s
		s.ready = false
		mine := "--match-set " + s.name + " "
		owned := func(rule string) bool { return strings.Contains(rule, mine) }
		want := []string{strings.Join(a.ruleSpec(s), " ")}
		added, deleted, err := a.c.reconcileLocked(ctx, s.fam, owned, want)
		if err != nil {
			errs = append(errs, fmt.Errorf("ipset: sync: %w", err))
			continue
		}
		s.ready = true
		a.log.Info("sync", "set", s.name, "entries", len(f.entries), "rules_added", added, "rules_deleted", deleted)
	}
	return errors.Join(errs...)
}

// Close implements ban.Action. Sets and rules stay in place.
func (a *IPSet) Close() error { return nil }

// Cleanup removes jump and chain (with the rules of both firewall
// actions, which share it) and destroys the sets.
func (a *IPSet) Cleanup(ctx context.Context) error {
	errs := []error{a.c.cleanup()}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	for _, s := range a.sets {
		s.ready = false
		for _, n := range []string{s.tmp, s.name} {
			err := a.ipset(ctx, nil, "destroy", n)
			if err != nil && !strings.Contains(err.Error(), "does not exist") {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ipset: cleanup: %w", err)
	}
	return nil
}

// orDiscard turns a nil logger into a discarding one.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
