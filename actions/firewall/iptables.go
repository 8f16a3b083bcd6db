// Package firewall carries bans out in the kernel's packet filter:
// iptables/ip6tables rules in an own chain, or ipset hash:net sets with
// per-entry timeouts.
package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/command"
)

// IPTablesChainConfig is the part of the firewall configuration shared by
// the iptables and ipset actions: both put their rules in one chain of our
// own, jumped to once from Parent for the SMTP ports.
type IPTablesChainConfig struct {
	// Chain is our own chain in the filter table. Default: MXGUARD.
	Chain string `yaml:"chain"`
	// Parent is the built-in chain that jumps to Chain. Default: INPUT.
	Parent string `yaml:"parent"`
	// Ports restricts the jump to these TCP ports (at most 15, the
	// multiport limit). Empty means all TCP traffic. Default: [25, 465, 587].
	Ports []int `yaml:"ports"`
	// Target is DROP (silent; clients time out) or REJECT (answered with a
	// TCP reset). Default: DROP.
	Target string `yaml:"target"`
	// WaitSeconds bounds the wait for the xtables lock (iptables --wait N).
	// 0 waits forever, which is never what a daemon wants. Default: 5.
	WaitSeconds int `yaml:"wait_seconds"`
	// IPv6 also manages ip6tables. Default: true.
	IPv6 bool `yaml:"ipv6"`
	// IPTablesPath and IP6TablesPath override the programs (default: found
	// in PATH). Tests point them at a wrapper that runs in a namespace.
	IPTablesPath  string `yaml:"iptables_path"`
	IP6TablesPath string `yaml:"ip6tables_path"`
	// IPTablesRestorePath and IP6TablesRestorePath are the bulk loaders
	// the iptables action's Sync uses. Default: iptables_path (or
	// ip6tables_path) with "-restore" appended when that is set, so
	// iptables-legacy pairs with iptables-legacy-restore; otherwise
	// iptables-restore and ip6tables-restore from PATH.
	IPTablesRestorePath  string `yaml:"iptables_restore_path"`
	IP6TablesRestorePath string `yaml:"ip6tables_restore_path"`
}

// IPTablesConfig configures the iptables/ip6tables action: one rule per
// banned prefix in the chain.
type IPTablesConfig struct {
	Enabled             bool `yaml:"enabled"`
	IPTablesChainConfig `yaml:",inline"`
}

// DefaultIPTablesChainConfig returns the defaults documented on the fields.
func DefaultIPTablesChainConfig() IPTablesChainConfig {
	return IPTablesChainConfig{
		Chain:       "MXGUARD",
		Parent:      "INPUT",
		Ports:       []int{25, 465, 587},
		Target:      "DROP",
		WaitSeconds: 5,
		IPv6:        true,
	}
}

// DefaultIPTablesConfig returns the default (disabled) iptables config.
// Decode YAML into it so that absent keys keep their defaults.
func DefaultIPTablesConfig() IPTablesConfig {
	return IPTablesConfig{IPTablesChainConfig: DefaultIPTablesChainConfig()}
}

var iptablesChainName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,28}$`)

// Validate reports every problem in the chain configuration.
func (c IPTablesChainConfig) Validate() error {
	var errs []error
	if !iptablesChainName.MatchString(c.Chain) {
		errs = append(errs, fmt.Errorf("chain %q: want 1-28 letters, digits, '_' or '-'", c.Chain))
	}
	if !iptablesChainName.MatchString(c.Parent) {
		errs = append(errs, fmt.Errorf("parent %q: want 1-28 letters, digits, '_' or '-'", c.Parent))
	}
	if c.Chain == c.Parent {
		errs = append(errs, fmt.Errorf("chain and parent are both %q", c.Chain))
	}
	if len(c.Ports) > 15 {
		errs = append(errs, fmt.Errorf("ports: %d given, multiport allows at most 15", len(c.Ports)))
	}
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("ports: %d is not a TCP port", p))
		}
	}
	switch strings.ToUpper(c.Target) {
	case "DROP", "REJECT":
	default:
		errs = append(errs, fmt.Errorf("target %q: want DROP or REJECT", c.Target))
	}
	if c.WaitSeconds < 0 {
		errs = append(errs, fmt.Errorf("wait_seconds %d: must not be negative", c.WaitSeconds))
	}
	return errors.Join(errs...)
}

// iptablesBackend is the subset of *iptables.IPTables we use, so that
// dry-run and unit tests can swap in iptablesMemory.
type iptablesBackend interface {
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
}

// iptablesRestorer loads an iptables-restore input in one run of the
// program (with --noflush: only the chains the input names change).
type iptablesRestorer interface {
	Restore(ctx context.Context, input []byte) error
}

// execRestorer runs iptables-restore or ip6tables-restore with the input
// on its standard input; no shell is involved.
type execRestorer struct {
	path string
	args []string
	run  command.Runner
}

func (r execRestorer) Restore(ctx context.Context, input []byte) error {
	_, err := r.run.Run(ctx, input, r.path, r.args...)
	return err
}

const iptablesTable = "filter"

type iptablesFamily struct {
	prog    string // "iptables" or "ip6tables", for messages
	be      iptablesBackend
	restore iptablesRestorer
	// ready is set once chain and jump were seen or made; a failed Append
	// clears it so the next call re-checks.
	ready bool
}

// iptablesChain owns our chain in both families. Every firewall call goes
// through mu: go-iptables forks one process per call and check-then-add is
// not atomic.
type iptablesChain struct {
	cfg IPTablesChainConfig
	log *slog.Logger
	mu  sync.Mutex
	v4  *iptablesFamily
	v6  *iptablesFamily // nil when IPv6 is off
}

// newIPTablesXChain builds the per-family backends. With dryRun set no
// program is run: commands are printed to dryRun and kept in memory.
func newIPTablesXChain(cfg IPTablesChainConfig, log *slog.Logger, dryRun io.Writer) (*iptablesChain, error) {
	cfg.Target = strings.ToUpper(cfg.Target)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("iptables config: %w", err)
	}
	c := &iptablesChain{cfg: cfg, log: log}
	// --wait=N, not "-w N": the optional argument must be attached.
	wait := "--wait"
	if cfg.WaitSeconds > 0 {
		wait += "=" + strconv.Itoa(cfg.WaitSeconds)
	}
	restoreArgs := []string{"--noflush", wait}
	mk := func(proto iptables.Protocol, prog, path, restorePath string) (*iptablesFamily, error) {
		if restorePath == "" {
			restorePath = prog + "-restore"
			if path != "" {
				restorePath = path + "-restore"
			}
		}
		if dryRun != nil {
			m := newIPTablesXMemory(prog, dryRun, append([]string{restorePath}, restoreArgs...))
			return &iptablesFamily{prog: prog, be: m, restore: m}, nil
		}
		if _, err := exec.LookPath(restorePath); err != nil {
			return nil, fmt.Errorf("%s: bulk loader: %w", prog, err)
		}
		restore := execRestorer{path: restorePath, args: restoreArgs, run: command.OS{}}
		var ipt *iptables.IPTables
		var err error
		if path != "" {
			ipt, err = iptables.New(iptables.IPFamily(proto), iptables.Timeout(cfg.WaitSeconds), iptables.Path(path))
		} else {
			path = prog
			ipt, err = iptables.New(iptables.IPFamily(proto), iptables.Timeout(cfg.WaitSeconds))
		}
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", prog, path, err)
		}
		// go-iptables parses but does not export the backend; rules in the
		// wrong backend are a silent no-op, so say which one we use.
		if out, err := exec.Command(path, "-V").Output(); err == nil {
			v := strings.TrimSpace(string(out))
			mode := "legacy"
			if strings.Contains(v, "nf_tables") {
				mode = "nf_tables"
			}
			log.Info("firewall backend", "program", prog, "path", path, "version", v, "mode", mode)
		}
		return &iptablesFamily{prog: prog, be: ipt, restore: restore}, nil
	}
	var err error
	if c.v4, err = mk(iptables.ProtocolIPv4, "iptables", cfg.IPTablesPath, cfg.IPTablesRestorePath); err != nil {
		return nil, err
	}
	if cfg.IPv6 {
		if c.v6, err = mk(iptables.ProtocolIPv6, "ip6tables", cfg.IP6TablesPath, cfg.IP6TablesRestorePath); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// family picks the family for a prefix.
func (c *iptablesChain) family(p netip.Prefix) (*iptablesFamily, error) {
	if p.Addr().Is4() {
		return c.v4, nil
	}
	if c.v6 == nil {
		return nil, fmt.Errorf("%s: IPv6 is disabled (ipv6: false)", p)
	}
	return c.v6, nil
}

func (c *iptablesChain) families() []*iptablesFamily {
	if c.v6 == nil {
		return []*iptablesFamily{c.v4}
	}
	return []*iptablesFamily{c.v4, c.v6}
}

// jumpSpec is the rule in Parent that sends SMTP traffic to our chain.
func (c *iptablesChain) jumpSpec() []string {
	if len(c.cfg.Ports) == 0 {
		return []string{"-p", "tcp", "-j", c.cfg.Chain}
	}
	ps := make([]string, len(c.cfg.Ports))
	for i, p := range c.cfg.Ports {
		ps[i] = strconv.Itoa(p)
	}
	return []string{"-p", "tcp", "-m", "multiport", "--dports", strings.Join(ps, ","), "-j", c.cfg.Chain}
}

// ruleSpec builds a rule in the canonical order `iptables -S` prints it
// (source, protocol, matches, target), so Sync can compare listed rules
// as strings. match is "-s PREFIX" or "-m set --match-set NAME src".
func (c *iptablesChain) ruleSpec(src string, match ...string) []string {
	var spec []string
	if src != "" {
		spec = append(spec, "-s", src)
	}
	if c.cfg.Target == "REJECT" {
		// REJECT --reject-with tcp-reset is only valid with -p tcp.
		spec = append(spec, "-p", "tcp")
		spec = append(spec, match...)
		return append(spec, "-j", "REJECT", "--reject-with", "tcp-reset")
	}
	spec = append(spec, match...)
	return append(spec, "-j", "DROP")
}

func (c *iptablesChain) describe(f *iptablesFamily, op, chain string, spec []string) string {
	return f.prog + " -t " + iptablesTable + " " + op + " " + chain + " " + strings.Join(spec, " ")
}

// ensureLocked creates the chain and the jump when missing.
func (c *iptablesChain) ensureLocked(f *iptablesFamily) error {
	ok, err := f.be.ChainExists(iptablesTable, c.cfg.Chain)
	if err != nil {
		return fmt.Errorf("%s: check chain %s: %w", f.prog, c.cfg.Chain, err)
	}
	if !ok {
		if err := f.be.NewChain(iptablesTable, c.cfg.Chain); err != nil {
			// Another process (or our ipset action) may have won the race.
			if ok, err2 := f.be.ChainExists(iptablesTable, c.cfg.Chain); err2 != nil || !ok {
				return fmt.Errorf("%s: create chain %s: %w", f.prog, c.cfg.Chain, err)
			}
		} else {
			c.log.Info("created chain", "program", f.prog, "chain", c.cfg.Chain)
		}
	}
	jump := c.jumpSpec()
	ok, err = f.be.Exists(iptablesTable, c.cfg.Parent, jump...)
	if err != nil {
		return fmt.Errorf("%s: check jump (%s): %w", f.prog, c.describe(f, "-C", c.cfg.Parent, jump), err)
	}
	if !ok {
		if err := f.be.Insert(iptablesTable, c.cfg.Parent, 1, jump...); err != nil {
			return fmt.Errorf("%s: %w", c.describe(f, "-I", c.cfg.Parent, jump), err)
		}
		c.log.Info("added jump", "program", f.prog, "parent", c.cfg.Parent, "chain", c.cfg.Chain)
	}
	f.ready = true
	return nil
}

// addLocked appends spec to our chain unless it is there already.
func (c *iptablesChain) addLocked(f *iptablesFamily, spec []string) error {
	if !f.ready {
		if err := c.ensureLocked(f); err != nil {
			return err
		}
	}
	ok, err := f.be.Exists(iptablesTable, c.cfg.Chain, spec...)
	if err != nil {
		return fmt.Errorf("%s: %w", c.describe(f, "-C", c.cfg.Chain, spec), err)
	}
	if ok {
		return nil
	}
	if err := f.be.Append(iptablesTable, c.cfg.Chain, spec...); err != nil {
		// The chain may have been deleted behind our back: heal once.
		if err2 := c.ensureLocked(f); err2 == nil {
			err = f.be.Append(iptablesTable, c.cfg.Chain, spec...)
		}
		if err != nil {
			f.ready = false
			return fmt.Errorf("%s: %w", c.describe(f, "-A", c.cfg.Chain, spec), err)
		}
	}
	return nil
}

// delLocked deletes every copy of spec from our chain (bounded).
func (c *iptablesChain) delLocked(f *iptablesFamily, spec []string) error {
	for range 8 {
		ok, err := f.be.Exists(iptablesTable, c.cfg.Chain, spec...)
		if err != nil {
			return fmt.Errorf("%s: %w", c.describe(f, "-C", c.cfg.Chain, spec), err)
		}
		if !ok {
			return nil
		}
		if err := f.be.Delete(iptablesTable, c.cfg.Chain, spec...); err != nil {
			return fmt.Errorf("%s: %w", c.describe(f, "-D", c.cfg.Chain, spec), err)
		}
	}
	return nil
}

// reconcileLocked makes the rules of our chain for which owned is true be
// exactly want (canonical strings, as ruleSpec joined by spaces). Rules we
// do not own (the ipset action's set rule, anything without "-s") are
// left alone. Lines of
// `iptables -S` that are not "-A CHAIN ..." (warnings, -N) are ignored;
// we never parse List headers.
func (c *iptablesChain) reconcileLocked(ctx context.Context, f *iptablesFamily, owned func(rule string) bool, want []string) (added, deleted int, err error) {
	if err := c.ensureLocked(f); err != nil {
		return 0, 0, err
	}
	lines, err := f.be.List(iptablesTable, c.cfg.Chain)
	if err != nil {
		return 0, 0, fmt.Errorf("%s -S %s: %w", f.prog, c.cfg.Chain, err)
	}
	wanted := make(map[string]bool, len(want))
	for _, w := range want {
		wanted[w] = false
	}
	prefix := "-A " + c.cfg.Chain + " "
	var errs []error
	for _, line := range lines {
		rule, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
		if !ok || !owned(rule) {
			continue
		}
		if seen, ok := wanted[rule]; ok && !seen {
			wanted[rule] = true
			continue
		}
		if err := ctx.Err(); err != nil {
			return added, deleted, err
		}
		// Stale or duplicate: delete this one copy.
		if err := f.be.Delete(iptablesTable, c.cfg.Chain, strings.Fields(rule)...); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.describe(f, "-D", c.cfg.Chain, strings.Fields(rule)), err))
			continue
		}
		deleted++
	}
	for _, w := range want {
		if wanted[w] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return added, deleted, err
		}
		spec := strings.Fields(w)
		if err := f.be.Append(iptablesTable, c.cfg.Chain, spec...); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.describe(f, "-A", c.cfg.Chain, spec), err))
			continue
		}
		wanted[w] = true
		added++
	}
	return added, deleted, errors.Join(errs...)
}

// specDeleteBudget bounds the rule comparisons that deleting stale rules
// one by one inside a restore may cost: iptables finds each "-D" rule by
// walking the chain (about 50 ms per delete in a 100k-rule chain with the
// nf_tables backend). Beyond it Sync rewrites the whole chain instead.
const specDeleteBudget = 1 << 20

// chainPlan is what a bulk Sync changes in our chain. Rules are as
// `iptables -S` prints them, without the "-A CHAIN " prefix.
type chainPlan struct {
	kept    []string // rules that stay, in chain order (foreign ones included)
	stale   []string // owned rules to delete, once per copy
	missing []string // wanted rules not in the chain, in want order
}

// planChain compares the listed chain with want. Lines of `iptables -S`
// that are not "-A CHAIN ..." (warnings, -N) are ignored.
func planChain(chain string, lines []string, owned func(rule string) bool, want []string) chainPlan {
	wanted := make(map[string]bool, len(want)) // value: already in the chain
	for _, w := range want {
		wanted[w] = false
	}
	prefix := "-A " + chain + " "
	var p chainPlan
	for _, line := range lines {
		rule, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
		if !ok {
			continue
		}
		if !owned(rule) {
			p.kept = append(p.kept, rule)
			continue
		}
		if seen, ok := wanted[rule]; ok && !seen {
			wanted[rule] = true
			p.kept = append(p.kept, rule)
			continue
		}
		p.stale = append(p.stale, rule) // not banned, or a duplicate
	}
	for _, w := range want {
		if !wanted[w] {
			wanted[w] = true
			p.missing = append(p.missing, w)
		}
	}
	return p
}

// restoreInput renders the plan as one iptables-restore --noflush input
// for the filter table. Only our chain and, when the jump is missing,
// Parent are named: --noflush leaves every other chain and table alone.
// A missing chain is created with -N, which fails (and the whole input
// with it) if it appeared meanwhile, rather than flushing it. With
// rewrite, ":CHAIN" flushes our chain and it is refilled in one
// transaction; otherwise stale rules are deleted one by one and
// missing ones appended, so a rule someone adds meanwhile survives.
func (c *iptablesChain) restoreInput(p chainPlan, chainExists, jumpExists, rewrite bool) []byte {
	chain := c.cfg.Chain
	var b bytes.Buffer
	b.WriteString("*" + iptablesTable + "\n")
	switch {
	case !chainExists:
		b.WriteString("-N " + chain + "\n")
	case rewrite:
		b.WriteString(":" + chain + " - [0:0]\n")
		for _, r := range p.kept {
			b.WriteString("-A " + chain + " " + r + "\n")
		}
	default:
		for _, r := range p.stale {
			b.WriteString("-D " + chain + " " + r + "\n")
		}
	}
	for _, r := range p.missing {
		b.WriteString("-A " + chain + " " + r + "\n")
	}
	if !jumpExists {
		b.WriteString("-I " + c.cfg.Parent + " 1 " + strings.Join(c.jumpSpec(), " ") + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// jumpExistsLocked looks for the jump in the listing of Parent, which is
// cheap, and asks `iptables -C` only when the listing does not show it
// in our canonical form: with nf_tables -C loads the whole table, seconds
// when our chain holds 100k rules.
func (c *iptablesChain) jumpExistsLocked(f *iptablesFamily) (bool, error) {
	jump := c.jumpSpec()
	if lines, err := f.be.List(iptablesTable, c.cfg.Parent); err == nil {
		want := "-A " + c.cfg.Parent + " " + strings.Join(jump, " ")
		for _, l := range lines {
			if strings.TrimSpace(l) == want {
				return true, nil
			}
		}
	}
	ok, err := f.be.Exists(iptablesTable, c.cfg.Parent, jump...)
	if err != nil {
		return false, fmt.Errorf("%s: check jump (%s): %w", f.prog, c.describe(f, "-C", c.cfg.Parent, jump), err)
	}
	return ok, nil
}

// bulkSyncLocked makes the rules of our chain for which owned is true be
// exactly want (canonical strings, as ruleSpec joined by spaces), and
// makes chain and jump exist, with one iptables-restore run: a few
// listings and one program run whatever the number of rules. Rules we do
// not own are kept. Nothing is loaded when nothing differs. A failed
// load is retried once from a fresh listing (the chain may have been
// created or changed meanwhile).
func (c *iptablesChain) bulkSyncLocked(ctx context.Context, f *iptablesFamily, owned func(rule string) bool, want []string) (added, deleted int, err error) {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		chainExists := true
		lines, err := f.be.List(iptablesTable, c.cfg.Chain)
		if err != nil {
			ok, err2 := f.be.ChainExists(iptablesTable, c.cfg.Chain)
			if err2 != nil || ok {
				return 0, 0, fmt.Errorf("%s -S %s: %w", f.prog, c.cfg.Chain, err)
			}
			chainExists, lines = false, nil
		}
		// Without the chain there is no jump to it (and -C would fail).
		jumpExists := false
		if chainExists {
			if jumpExists, err = c.jumpExistsLocked(f); err != nil {
				return 0, 0, err
			}
		}
		p := planChain(c.cfg.Chain, lines, owned, want)
		if chainExists && jumpExists && len(p.stale) == 0 && len(p.missing) == 0 {
			f.ready = true
			return 0, 0, nil
		}
		rewrite := len(p.stale)*(len(lines)+1) > specDeleteBudget
		input := c.restoreInput(p, chainExists, jumpExists, rewrite)
		err = f.restore.Restore(ctx, input)
		if err == nil {
			f.ready = true
			if !chainExists {
				c.log.Info("created chain", "program", f.prog, "chain", c.cfg.Chain)
			}
			if !jumpExists {
				c.log.Info("added jump", "program", f.prog, "parent", c.cfg.Parent, "chain", c.cfg.Chain)
			}
			return len(p.missing), len(p.stale), nil
		}
		f.ready = false
		if attempt > 0 || ctx.Err() != nil {
			return 0, 0, fmt.Errorf("%s: bulk load of chain %s (%d rules to add, %d to delete)%s: %w",
				f.prog, c.cfg.Chain, len(p.missing), len(p.stale), failedLine(err, input), err)
		}
		c.log.Warn("bulk load failed, retrying once", "program", f.prog, "err", err)
	}
}

var restoreFailedLine = regexp.MustCompile(`line (\d+) failed`)

// failedLine quotes the input line that iptables-restore names in err
// ("line N failed"), so the error says which rule was refused.
func failedLine(err error, input []byte) string {
	m := restoreFailedLine.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	n, _ := strconv.Atoi(m[1])
	lines := strings.Split(string(input), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return fmt.Sprintf(" at %q", lines[n-1])
}

// cleanup removes every jump to our chain from Parent, then the chain.
func (c *iptablesChain) cleanup() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, f := range c.families() {
		f.ready = false
		jump := c.jumpSpec()
		if err := c.delJumpLocked(f, jump); err != nil {
			errs = append(errs, err)
		}
		if err := f.be.ClearAndDeleteChain(iptablesTable, c.cfg.Chain); err != nil {
			errs = append(errs, fmt.Errorf("%s -F/-X %s: %w", f.prog, c.cfg.Chain, err))
		}
	}
	return errors.Join(errs...)
}

func (c *iptablesChain) delJumpLocked(f *iptablesFamily, jump []string) error {
	for range 8 {
		ok, err := f.be.Exists(iptablesTable, c.cfg.Parent, jump...)
		if err != nil || !ok {
			return err
		}
		if err := f.be.Delete(iptablesTable, c.cfg.Parent, jump...); err != nil {
			return fmt.Errorf("%s: %w", c.describe(f, "-D", c.cfg.Parent, jump), err)
		}
	}
	return nil
}

// IPTablesOptions are the run-time dependencies of NewIPTables.
type IPTablesOptions struct {
	Logger *slog.Logger // nil: discard
	// DryRun, when set, receives the iptables commands that would be run
	// (one per line); nothing is executed.
	DryRun io.Writer
	Now    func() time.Time // nil: time.Now
}

// IPTables bans each prefix with one rule `-s PREFIX -j TARGET` in our own
// chain (per family), jumped to from Parent for the configured ports.
// Close leaves the rules in place (the kernel keeps protecting while the
// daemon restarts); Cleanup removes jump and chain.
type IPTables struct {
	c   *iptablesChain
	log *slog.Logger
	now func() time.Time
}

var _ ban.Action = (*IPTables)(nil)

// NewIPTables checks the configuration and the programs. It does not touch
// the firewall: the first Sync or Apply creates chain and jump.
func NewIPTables(cfg IPTablesConfig, opts IPTablesOptions) (*IPTables, error) {
	log := orDiscard(opts.Logger).With("action", "iptables")
	c, err := newIPTablesXChain(cfg.IPTablesChainConfig, log, opts.DryRun)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &IPTables{c: c, log: log, now: now}, nil
}

// Name implements ban.Action.
func (a *IPTables) Name() string { return "iptables" }

// ownedRule: our per-prefix rules are the ones with a source and no set.
// The chain is mxguard's own: a "-s" rule added to it by hand counts as
// ours and is removed at the next Sync unless it is banned.
func (a *IPTables) ownedRule(rule string) bool {
	return strings.HasPrefix(rule, "-s ") && !strings.Contains(rule, "--match-set")
}

// Apply implements ban.Action.
func (a *IPTables) Apply(ctx context.Context, b ban.Ban) error {
	if err := ban.CheckPrefix(b.Prefix); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	f, err := a.c.family(b.Prefix)
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := a.c.addLocked(f, a.c.ruleSpec(b.Prefix.String())); err != nil {
		return fmt.Errorf("iptables: ban %s: %w", b.Prefix, err)
	}
	a.log.Debug("rule added", "prefix", b.Prefix)
	return nil
}

// Revoke implements ban.Action.
func (a *IPTables) Revoke(ctx context.Context, p netip.Prefix) error {
	if err := ban.CheckPrefix(p); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	f, err := a.c.family(p)
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := a.c.delLocked(f, a.c.ruleSpec(p.String())); err != nil {
		return fmt.Errorf("iptables: unban %s: %w", p, err)
	}
	a.log.Debug("rule deleted", "prefix", p)
	return nil
}

// Sync implements ban.Action: chain and jump are recreated when missing, rules
// for active bans added, our other per-prefix rules deleted, all with one
// iptables-restore --noflush run per family (see bulkSyncLocked). Rules
// in our chain without "-s" (added by hand, or the ipset action's) are
// kept. Invalid or expired bans are skipped (invalid ones are reported
// in the error).
func (a *IPTables) Sync(ctx context.Context, active []ban.Ban) error {
	now := a.now()
	var want4, want6 []string
	var errs []error
	for _, b := range active {
		if err := ban.CheckPrefix(b.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("iptables: sync: %w", err))
			continue
		}
		if !b.Until.IsZero() && !b.Active(now) {
			continue
		}
		r := strings.Join(a.c.ruleSpec(b.Prefix.String()), " ")
		if b.Prefix.Addr().Is4() {
			want4 = append(want4, r)
		} else if a.c.v6 != nil {
			want6 = append(want6, r)
		} else {
			errs = append(errs, fmt.Errorf("iptables: sync: %s: IPv6 is disabled", b.Prefix))
		}
	}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	for _, fw := range []struct {
		f    *iptablesFamily
		want []string
	}{{a.c.v4, want4}, {a.c.v6, want6}} {
		if fw.f == nil {
			continue
		}
		added, deleted, err := a.c.bulkSyncLocked(ctx, fw.f, a.ownedRule, fw.want)
		a.log.Info("sync", "program", fw.f.prog, "want", len(fw.want), "added", added, "deleted", deleted)
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables: sync: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close implements ban.Action. Rules stay in place.
func (a *IPTables) Close() error { return nil }

// Cleanup removes the jump and our chain with every rule in it (for
// `mxguard daemon --cleanup`). If the ipset action shares the chain, its
// rules go too; call IPSet.Cleanup as well to destroy the sets.
func (a *IPTables) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := a.c.cleanup(); err != nil {
		return fmt.Errorf("iptables: cleanup: %w", err)
	}
	return nil
}
