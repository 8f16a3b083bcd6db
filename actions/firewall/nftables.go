package firewall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/mxguard/mxguard/actions/ban"
)

// NFTablesConfig configures the nftables action: native netlink, no nft
// program. By default mxguard owns a table (family inet) with one
// interval set per address family and one input chain; with SetOnly it
// only adds and deletes elements of two sets the administrator made.
type NFTablesConfig struct {
	Enabled bool `yaml:"enabled"`
	// Table is our own table (family inet), or with SetOnly the
	// administrator's table that holds the sets. Default: mxguard.
	Table string `yaml:"table"`
	// Family is the family of Table: inet, or with SetOnly also ip (then
	// ipv6 must be false). Default: inet.
	Family string `yaml:"family"`
	// SetV4 and SetV6 name the sets of banned prefixes. Default:
	// banned_v4, banned_v6.
	SetV4 string `yaml:"set_v4"`
	SetV6 string `yaml:"set_v6"`
	// Ports restricts the rules to these TCP destination ports; empty
	// means all TCP traffic. Default: [25, 465, 587].
	Ports []int `yaml:"ports"`
	// Target is DROP (silent) or REJECT (a TCP reset), as for iptables.
	// Default: DROP.
	Target string `yaml:"target"`
	// Priority of our input hook chain. The default -10 runs before the
	// usual filter chains at priority 0 (a drop there is final; an accept
	// in our chain would not be, which is why we only drop).
	Priority int `yaml:"priority"`
	// IPv6 also bans IPv6 prefixes. Default: true.
	IPv6 bool `yaml:"ipv6"`
	// SetOnly uses SetV4 and SetV6 in Table as made by the administrator
	// (whose own rule matches them): mxguard then never creates or
	// deletes a table, chain, rule or set, only its elements.
	SetOnly bool `yaml:"set_only"`
}

// DefaultNFTablesConfig returns the default (disabled) nftables config.
func DefaultNFTablesConfig() NFTablesConfig {
	return NFTablesConfig{
		Table:    "mxguard",
		Family:   "inet",
		SetV4:    "banned_v4",
		SetV6:    "banned_v6",
		Ports:    []int{25, 465, 587},
		Target:   "DROP",
		Priority: -10,
		IPv6:     true,
	}
}

var nftName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)

// Validate reports every problem in the configuration.
func (c NFTablesConfig) Validate() error {
	var errs []error
	name := func(key, v string) {
		if !nftName.MatchString(v) {
			errs = append(errs, fmt.Errorf("%s %q: want a letter or '_', then up to 63 letters, digits, '_', '.' or '-'", key, v))
		}
	}
	name("table", c.Table)
	name("set_v4", c.SetV4)
	if c.IPv6 {
		name("set_v6", c.SetV6)
		if c.SetV6 == c.SetV4 {
			errs = append(errs, fmt.Errorf("set_v6 %q: same name as set_v4", c.SetV6))
		}
	}
	switch {
	case c.Family == "inet":
	case c.Family == "ip" && c.SetOnly:
		if c.IPv6 {
			errs = append(errs, errors.New("family ip holds no IPv6 set: set ipv6: false (or use an inet table)"))
		}
	case c.SetOnly:
		errs = append(errs, fmt.Errorf("family %q: want inet or ip", c.Family))
	default:
		errs = append(errs, fmt.Errorf("family %q: our own table is always inet (other families only with set_only)", c.Family))
	}
	seen := map[int]bool{}
	for _, p := range c.Ports {
		switch {
		case p < 1 || p > 65535:
			errs = append(errs, fmt.Errorf("ports: %d is not a TCP port", p))
		case seen[p]:
			errs = append(errs, fmt.Errorf("ports: %d listed twice", p))
		}
		seen[p] = true
	}
	switch strings.ToUpper(c.Target) {
	case "DROP", "REJECT":
	default:
		errs = append(errs, fmt.Errorf("target %q: want DROP or REJECT", c.Target))
	}
	if c.Priority < math.MinInt32 || c.Priority > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("priority %d: out of range", c.Priority))
	}
	return errors.Join(errs...)
}

// NFTablesOptions are the run-time dependencies of NewNFTables.
type NFTablesOptions struct {
	Logger *slog.Logger // nil: discard
	// DryRun, when set, receives each netlink transaction that would be
	// sent, rendered as an `nft -f -` script; nothing is sent.
	DryRun io.Writer
	Now    func() time.Time // nil: time.Now
	// Dial opens the netlink connection with the given options (nil:
	// nftables.New, in the daemon's network namespace). Tests open it
	// inside a namespace.
	Dial func(opts ...nftables.ConnOption) (*nftables.Conn, error)
}

// nftElemComment marks the elements mxguard added: in set_only mode Sync
// and Cleanup leave elements without it (the administrator's) alone.
const nftElemComment = "mxguard"

// Netlink limits, which the library does not check: the element list of
// one message is a single attribute whose length field has 16 bits (a
// longer list is silently cut: the kernel sees only part of it), and a
// transaction is one sendmsg bounded by the socket's send buffer (about
// 208 KiB by default). nftIntervalBytes is an upper bound of one interval
// (start with key, timeout and comment; end with key and flags).
const (
	nftMsgBytes   = 60 << 10
	nftBatchBytes = 180 << 10
)

// nftTxBytes is the send buffer asked for (SO_SNDBUFFORCE; we have
// CAP_NET_ADMIN anyway) so that Sync can replace a set's content in one
// transaction: about 900,000 IPv4 or 680,000 IPv6 bans. The buffer is a
// limit, not memory set aside.
const (
	nftTxBytes  = 64 << 20
	nftAckBytes = 8 << 20 // receive buffer: one ack per message
)

// nftBigBuffers raises the socket buffers; where that is refused the
// defaults stay and Sync falls back to several transactions.
func nftBigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, nftTxBytes) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, nftTxBytes)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nftAckBytes) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, nftAckBytes)
		}
	})
	return nil
}

func nftIntervalBytes(is4 bool) int {
	if is4 {
		return 72 // 44 + 24, rounded up
	}
	return 96 // 56 + 36, rounded up
}

// nftRefreshSlack: a kernel timeout this close to the wanted one is not
// renewed by Sync.
const nftRefreshSlack = 2 * time.Second

// NFTables bans prefixes by adding them to an nftables interval set with
// a timeout of Until-now, so the kernel lets them go even if the daemon
// is down. All changes go over netlink (github.com/google/nftables); no
// program is run.
type NFTables struct {
	cfg  NFTablesConfig
	log  *slog.Logger
	now  func() time.Time
	dry  io.Writer
	dial func() (*nftables.Conn, error)
	// chunk, when set, caps the intervals per message and transaction
	// below the netlink limits (tests make it small).
	chunk int

	mu     sync.Mutex
	conn   *nftables.Conn // nil in dry-run
	table  *nftables.Table
	chain  *nftables.Chain
	fams   [2]*nftFamily // IPv4, IPv6 (nil when off)
	model  *nftModel
	ready  bool // structure checked (own mode) or sets read (set_only)
	nextID uint32
}

type nftFamily struct {
	is4  bool
	name string // ip or ip6, as in rules
	set  *nftables.Set
}

var _ ban.Action = (*NFTables)(nil)

// NewNFTables checks the configuration and the kernel and builds the
// action. In the default mode it probes, in a transaction that leaves
// nothing behind, that the kernel has what the table needs (nf_tables,
// interval sets with timeouts, an input hook chain, the rule's
// expressions) and fails naming what is missing. With SetOnly it checks
// that both sets exist with the right key type. The first Sync or Apply
// creates table, sets, chain and rules. In dry-run nothing is probed.
func NewNFTables(cfg NFTablesConfig, opts NFTablesOptions) (*NFTables, error) {
	cfg.Target = strings.ToUpper(cfg.Target)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nftables config: %w", err)
	}
	a := &NFTables{cfg: cfg, log: orDiscard(opts.Logger).With("action", "nftables"), now: opts.Now,
		dry: opts.DryRun, model: newNFTModel()}
	if a.now == nil {
		a.now = time.Now
	}
	dial := opts.Dial
	if dial == nil {
		dial = nftables.New
	}
	a.dial = func() (*nftables.Conn, error) {
		return dial(nftables.AsLasting(), nftables.WithSockOptions(nftBigBuffers))
	}
	fam := nftables.TableFamilyINet
	if cfg.Family == "ip" {
		fam = nftables.TableFamilyIPv4
	}
	a.table = &nftables.Table{Family: fam, Name: cfg.Table}
	a.chain = &nftables.Chain{Name: "input", Table: a.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(cfg.Priority))}
	a.fams[0] = &nftFamily{is4: true, name: "ip", set: a.ownSet(cfg.SetV4, nftables.TypeIPAddr)}
	if cfg.IPv6 {
		a.fams[1] = &nftFamily{name: "ip6", set: a.ownSet(cfg.SetV6, nftables.TypeIP6Addr)}
	}
	if a.dry != nil {
		return a, nil
	}
	conn, err := a.dial()
	if err != nil {
		return nil, fmt.Errorf("nftables: netlink: %w (kernel without nfnetlink?)", err)
	}
	a.conn = conn
	if cfg.SetOnly {
		err = a.loadAdminSetsLocked()
	} else {
		err = probeNFT(conn, cfg.Ports, cfg.Priority, cfg.Target == "REJECT")
	}
	if err != nil {
		_ = conn.CloseLasting()
		return nil, err
	}
	return a, nil
}

// ProbeNFTables checks, in the current network namespace and without
// leaving anything behind, that the kernel has every nf_tables feature
// the nftables action can use (both targets); the error names the first
// one missing. For `config check`.
func ProbeNFTables() error {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("nftables: netlink: %w (kernel without nfnetlink?)", err)
	}
	defer func() { _ = conn.CloseLasting() }()
	return probeNFT(conn, DefaultNFTablesConfig().Ports, -10, true)
}

// probeNFT builds our structure in a table of its own and deletes that
// table in the same transaction, one feature more per step, so the first
// failing step names the missing feature.
func probeNFT(conn *nftables.Conn, ports []int, priority int, reject bool) error {
	cfg := DefaultNFTablesConfig()
	cfg.Table = fmt.Sprintf("mxguard_probe_%d", time.Now().UnixNano()%1e9)
	cfg.Ports, cfg.Priority = ports, priority
	p := &NFTables{cfg: cfg, log: orDiscard(nil), conn: conn}
	p.table = &nftables.Table{Family: nftables.TableFamilyINet, Name: cfg.Table}
	p.chain = &nftables.Chain{Name: "input", Table: p.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(priority))}
	p.fams[0] = &nftFamily{is4: true, name: "ip", set: p.ownSet(cfg.SetV4, nftables.TypeIPAddr)}
	p.fams[1] = &nftFamily{name: "ip6", set: p.ownSet(cfg.SetV6, nftables.TypeIP6Addr)}
	steps := []struct {
		feature string
		build   func(b *nftBatch)
	}{
		{"nf_tables with inet tables (CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET)", func(b *nftBatch) {}},
		{"sets with flags interval and timeout (nft_set_rbtree)", func(b *nftBatch) {
			for _, f := range p.fams {
				b.addSet(f.set)
			}
		}},
		{"a filter chain on the input hook", func(b *nftBatch) { b.addChain(p.chain) }},
		{"the drop rule: meta, payload, set lookup, counter (CONFIG_NFT_COUNTER)", func(b *nftBatch) {
			p.cfg.Target = "DROP"
			p.addRules(b)
		}},
	}
	if reject {
		steps = append(steps, struct {
			feature string
			build   func(b *nftBatch)
		}{"reject with tcp reset in inet tables (CONFIG_NFT_REJECT_INET)", func(b *nftBatch) {
			p.cfg.Target = "REJECT"
			p.addRules(b)
		}})
	}
	var build []func(b *nftBatch)
	for _, s := range steps {
		build = append(build, s.build)
		b := p.batch()
		b.addTable(p.table)
		for _, f := range build {
			f(b)
		}
		b.delTable(p.table)
		p.nextID = 0
		if err := b.run(); err != nil {
			return fmt.Errorf("nftables: the kernel lacks %s: %w", s.feature, err)
		}
	}
	return nil
}

func (a *NFTables) ownSet(name string, typ nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{Table: a.table, Name: name, KeyType: typ, Interval: true, HasTimeout: true}
}

// Name implements ban.Action.
func (a *NFTables) Name() string { return "nftables" }

func (a *NFTables) family(p netip.Prefix) (*nftFamily, error) {
	f := a.fams[famIndex(p)]
	if f == nil {
		return nil, fmt.Errorf("%s: IPv6 is disabled (ipv6: false)", p)
	}
	return f, nil
}

// fits checks that a set without the interval flag (set_only) is only
// asked to hold single addresses.
func (f *nftFamily) fits(p netip.Prefix) error {
	if !f.set.Interval && !p.IsSingleIP() {
		return fmt.Errorf("%s: set %s has no interval flag, so it holds single addresses only", p, f.set.Name)
	}
	return nil
}

// wantedInterval is the element for an active ban.
func (f *nftFamily) wantedInterval(p netip.Prefix, until time.Time) (nftInterval, error) {
	if !f.set.Interval {
		return nftInterval{start: p.Addr(), until: until, single: true}, nil
	}
	iv, err := prefixInterval(p)
	iv.until = until
	return iv, err
}

// Apply implements ban.Action: one transaction that adds the prefix with
// its timeout. A ban already in the set is deleted and added again in the
// same transaction (so its timeout follows an extended ban on every
// kernel); bans inside the new prefix leave the set, as an interval set
// cannot hold both. A ban inside an active one only goes into the model.
// If the kernel disagrees (set flushed or table deleted by hand), the
// whole set is reconciled.
func (a *NFTables) Apply(ctx context.Context, b ban.Ban) error {
	p := b.Prefix
	f, err := a.setFor(p, "ban")
	if err != nil {
		return err
	}
	now := a.now()
	if !activeAt(b.Until, now) {
		a.log.Debug("expired ban not added", "prefix", p, "until", b.Until)
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.ensureLocked(); err != nil {
		return fmt.Errorf("nftables: ban %s: %w", p, err)
	}
	m := a.model
	wasIn := m.inKernel(p, now)
	m.set(p, b.Until)
	if m.covered(p, now) {
		a.log.Debug("ban inside an active one", "prefix", p)
		return nil
	}
	iv, err := f.wantedInterval(p, b.Until)
	if err != nil {
		return fmt.Errorf("nftables: ban %s: %w", p, err)
	}
	var dels []nftInterval
	if wasIn { // the bans inside it are not in the kernel
		dels = append(dels, iv)
	} else {
		for _, q := range m.topInside(p, now) {
			qv, err := f.wantedInterval(q, time.Time{})
			if err != nil {
				return fmt.Errorf("nftables: ban %s: %w", p, err)
			}
			dels = append(dels, qv)
		}
	}
	bt := a.batch()
	bt.delElems(f, dels)
	bt.addElems(f, []nftInterval{iv}, now)
	if err := bt.run(); err != nil {
		return a.healLocked(ctx, fmt.Errorf("ban %s: %w", p, err))
	}
	a.log.Debug("element added", "prefix", p, "set", f.set.Name, "until", b.Until, "replaced", len(dels))
	return nil
}

// setFor validates p (before anything reaches netlink) and returns the
// family whose set holds it; verb names the operation in errors.
func (a *NFTables) setFor(p netip.Prefix, verb string) (*nftFamily, error) {
	if err := ban.CheckPrefix(p); err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	f, err := a.family(p)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	if err := f.fits(p); err != nil {
		return nil, fmt.Errorf("nftables: %s %w", verb, err)
	}
	return f, nil
}

// Revoke implements ban.Action: one transaction that deletes the prefix
// and adds the bans inside it that it covered. A prefix the kernel no
// longer holds (its timeout ran out) is not an error.
func (a *NFTables) Revoke(ctx context.Context, p netip.Prefix) error {
	f, err := a.setFor(p, "unban")
	if err != nil {
		return err
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.ensureLocked(); err != nil {
		return fmt.Errorf("nftables: unban %s: %w", p, err)
	}
	m := a.model
	until, known := m.bans[p]
	m.remove(p)
	if m.covered(p, now) {
		return nil // never was in the kernel
	}
	// Unknown to the model: may be left from an earlier run; try.
	del := !known || activeAt(until, now)
	var adds []nftInterval
	for _, q := range m.topInside(p, now) {
		iv, err := f.wantedInterval(q, m.bans[q])
		if err != nil {
			return fmt.Errorf("nftables: unban %s: %w", p, err)
		}
		adds = append(adds, iv)
	}
	iv, err := f.wantedInterval(p, time.Time{})
	if err != nil {
		return fmt.Errorf("nftables: unban %s: %w", p, err)
	}
	send := func(del bool) error {
		bt := a.batch()
		if del {
			bt.delElems(f, []nftInterval{iv})
		}
		bt.addElems(f, adds, now)
		return bt.run()
	}
	if !del && len(adds) == 0 {
		return nil
	}
	err = send(del)
	if err != nil && del && errors.Is(err, unix.ENOENT) {
		err = send(false) // gone already: expired in the kernel, or deleted by hand
	}
	if err != nil {
		return a.healLocked(ctx, fmt.Errorf("unban %s: %w", p, err))
	}
	a.log.Debug("element deleted", "prefix", p, "set", f.set.Name, "uncovered", len(adds))
	return nil
}

// Sync implements ban.Action: it checks (and repairs) table, sets, chain
// and rules, then makes each set hold exactly the active bans with fresh
// timeouts. Our own set is flushed and refilled in one transaction (the
// set never lacks a ban, and nothing is read: the kernel's dump of an
// interval set is quadratic, about 30 s for 100k elements). In set_only
// mode the set is read and reconciled element by element, so that the
// administrator's elements stay: stale ones deleted first, missing ones
// added, drifted timeouts renewed.
func (a *NFTables) Sync(ctx context.Context, active []ban.Ban) error {
	now := a.now()
	model := newNFTModel()
	var errs []error
	for _, b := range active {
		if err := ban.CheckPrefix(b.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("nftables: sync: %w", err))
			continue
		}
		f, err := a.family(b.Prefix)
		if err == nil {
			err = f.fits(b.Prefix)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("nftables: sync: %w", err))
			continue
		}
		if !activeAt(b.Until, now) {
			continue
		}
		if old, ok := model.bans[b.Prefix]; ok && (old.IsZero() || old.After(b.Until)) {
			continue // the same prefix twice: the longer ban wins
		}
		model.set(b.Prefix, b.Until)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.model = model
	a.ready = false // check the structure on every Sync: this is the repair path
	if err := a.openLocked(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := a.syncLocked(ctx); err != nil {
		errs = append(errs, fmt.Errorf("nftables: sync: %w", err))
	}
	return errors.Join(errs...)
}

// healLocked reconciles everything after a failed change, on a fresh
// connection.
func (a *NFTables) healLocked(ctx context.Context, cause error) error {
	a.log.Warn("change failed, reconciling with the kernel", "err", cause)
	a.ready = false
	if a.conn != nil {
		_ = a.conn.CloseLasting()
		conn, err := a.dial()
		if err != nil {
			return fmt.Errorf("nftables: %w; reconnect: %w", cause, err)
		}
		a.conn = conn
	}
	if err := a.syncLocked(ctx); err != nil {
		return fmt.Errorf("nftables: %w; reconcile: %w", cause, err)
	}
	return nil
}

func (a *NFTables) syncLocked(ctx context.Context) error {
	fresh, err := a.ensureStructureLocked()
	if err != nil {
		return err
	}
	var errs []error
	for i, f := range a.fams {
		if f == nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := a.syncSetLocked(ctx, f, fresh[i]); err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", f.set.Name, err))
		}
	}
	return errors.Join(errs...)
}

// wantedLocked lists the elements the set of f must hold.
func (a *NFTables) wantedLocked(f *nftFamily, now time.Time) ([]nftInterval, error) {
	m := a.model
	var out []nftInterval
	for p, until := range m.bans {
		if p.Addr().Is4() != f.is4 || !m.inKernel(p, now) {
			continue
		}
		iv, err := f.wantedInterval(p, until)
		if err != nil {
			return nil, err
		}
		out = append(out, iv)
	}
	sortIntervals(out)
	return out, nil
}

func (a *NFTables) syncSetLocked(ctx context.Context, f *nftFamily, fresh bool) error {
	if !a.cfg.SetOnly {
		return a.replaceSetLocked(ctx, f, fresh)
	}
	var have []nftInterval
	if a.conn != nil {
		elems, err := a.conn.GetSetElements(f.set)
		if err != nil {
			return fmt.Errorf("list elements: %w", err)
		}
		have = kernelIntervals(elems, f.set.Interval, f.is4)
	}
	now := a.now() // after the dump: the kernel's expiries are as of now
	list, err := a.wantedLocked(f, now)
	if err != nil {
		return err
	}
	wanted := make(map[nftKey]nftInterval, len(list))
	for _, iv := range list {
		wanted[iv.key()] = iv
	}
	var dels, refresh, adds, foreign []nftInterval
	for _, h := range have {
		w, ok := wanted[h.key()]
		switch {
		case !ok && a.cfg.SetOnly && h.comment != nftElemComment:
			foreign = append(foreign, h) // the administrator's
		case !ok:
			dels = append(dels, h)
		case f.set.HasTimeout && a.staleTimeout(h, w, now):
			refresh = append(refresh, w)
			delete(wanted, h.key())
		default:
			delete(wanted, h.key())
		}
	}
	for _, w := range wanted {
		adds = append(adds, w)
	}
	sortIntervals(adds)
	if len(foreign) > 0 {
		adds = a.dropOverlaps(f, adds, foreign)
	}
	if err := a.sendChunksLocked(ctx, f, dels, refresh, adds); err != nil {
		return err
	}
	a.log.Info("sync", "set", f.set.Name, "elements", len(have)-len(dels)+len(adds), "added", len(adds),
		"deleted", len(dels), "refreshed", len(refresh))
	return nil
}

// replaceSetLocked makes our own set hold exactly the wanted elements:
// flush and refill in one transaction. If the kernel refuses a
// transaction that large (no bigger send buffer), it is flushed and
// refilled in several, and bans are briefly not enforced.
func (a *NFTables) replaceSetLocked(ctx context.Context, f *nftFamily, fresh bool) error {
	now := a.now()
	want, err := a.wantedLocked(f, now)
	if err != nil {
		return err
	}
	b := a.batch()
	if !fresh {
		b.flushSet(f)
	}
	b.addElems(f, want, now)
	err = b.run()
	if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
		a.log.Warn("transaction too large for the socket; refilling the set in parts", "set", f.set.Name,
			"elements", len(want), "err", err)
		b = a.batch()
		b.flushSet(f)
		if err = b.run(); err == nil {
			err = a.sendChunksLocked(ctx, f, nil, nil, want)
		}
	}
	if err != nil {
		return err
	}
	a.log.Info("sync", "set", f.set.Name, "elements", len(want))
	return nil
}

// staleTimeout reports whether the kernel's element h lives too long or
// too short for the wanted w.
func (a *NFTables) staleTimeout(h, w nftInterval, now time.Time) bool {
	if w.until.IsZero() || h.timeout == 0 {
		return w.until.IsZero() != (h.timeout == 0)
	}
	d := w.until.Sub(now) - h.expires
	return d > nftRefreshSlack || d < -nftRefreshSlack
}

// dropOverlaps leaves out wanted elements that overlap one the
// administrator put into the set (set_only): the kernel would refuse the
// whole transaction.
func (a *NFTables) dropOverlaps(f *nftFamily, adds, foreign []nftInterval) []nftInterval {
	sortIntervals(foreign)
	last := func(iv nftInterval) netip.Addr {
		if iv.single {
			return iv.start
		}
		if !iv.end.IsValid() {
			return lastAddr(netip.PrefixFrom(iv.start, 0))
		}
		return iv.end.Prev()
	}
	out := adds[:0]
	for _, w := range adds {
		// The foreign range starting last at or before w's last address
		// is the only one that can overlap (they do not overlap each other).
		i, _ := slices.BinarySearchFunc(foreign, last(w), func(iv nftInterval, a netip.Addr) int {
			if iv.start.Compare(a) <= 0 {
				return -1
			}
			return 1
		})
		if i > 0 && !last(foreign[i-1]).Less(w.start) {
			a.log.Warn("ban overlaps an element the administrator put into the set; not added",
				"set", f.set.Name, "ban", w.String(), "element", foreign[i-1].String())
			continue
		}
		out = append(out, w)
	}
	return out
}

func sortIntervals(ivs []nftInterval) {
	slices.SortFunc(ivs, func(a, b nftInterval) int { return a.start.Compare(b.start) })
}

// limits returns how many intervals of f go into one message and into
// one transaction.
func (a *NFTables) limits(f *nftFamily) (perMsg, perBatch int) {
	size := nftIntervalBytes(f.is4)
	perMsg, perBatch = nftMsgBytes/size, nftBatchBytes/size
	if a.chunk > 0 {
		perMsg, perBatch = min(perMsg, a.chunk), min(perBatch, a.chunk)
	}
	return perMsg, perBatch
}

// sendChunksLocked sends deletions, then renewals (delete and add in the
// same transaction, so the prefix is never unbanned), then additions,
// in transactions and messages within the netlink limits.
func (a *NFTables) sendChunksLocked(ctx context.Context, f *nftFamily, dels, refresh, adds []nftInterval) error {
	_, perBatch := a.limits(f)
	type step struct{ del, add []nftInterval }
	var steps []step
	for ivs := range slices.Chunk(dels, perBatch) {
		steps = append(steps, step{del: ivs})
	}
	for ivs := range slices.Chunk(refresh, max(1, perBatch/2)) {
		steps = append(steps, step{del: ivs, add: ivs})
	}
	for ivs := range slices.Chunk(adds, perBatch) {
		steps = append(steps, step{add: ivs})
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := a.batch()
		b.delElems(f, s.del)
		b.addElems(f, s.add, a.now())
		if err := b.run(); err != nil {
			return err
		}
	}
	return nil
}

// openLocked opens the netlink connection again after Close (the daemon
// runs Cleanup after closing the actions).
func (a *NFTables) openLocked() error {
	if a.conn != nil || a.dry != nil {
		return nil
	}
	conn, err := a.dial()
	if err != nil {
		return fmt.Errorf("nftables: netlink: %w", err)
	}
	a.conn, a.ready = conn, false
	return nil
}

// ensureLocked opens the connection if closed and checks the structure
// once after start or a failure.
func (a *NFTables) ensureLocked() error {
	if err := a.openLocked(); err != nil {
		return err
	}
	if a.ready {
		return nil
	}
	_, err := a.ensureStructureLocked()
	return err
}

// ensureStructureLocked makes table, sets, chain and rules what the
// config says (own mode), or reads the administrator's sets (set_only).
// fresh tells which sets were just created (and so are empty).
func (a *NFTables) ensureStructureLocked() (fresh [2]bool, err error) {
	if a.cfg.SetOnly {
		if a.conn != nil {
			if err := a.loadAdminSetsLocked(); err != nil {
				return fresh, err
			}
		}
		a.ready = true
		return fresh, nil
	}
	b := a.batch()
	if a.conn == nil { // dry-run: show the whole structure (nft's add is idempotent)
		b.addTable(a.table)
		for _, f := range a.fams {
			if f != nil {
				b.addSet(f.set)
			}
		}
		b.addChain(a.chain)
		b.flushChain(a.chain)
		a.addRules(b)
		a.ready = true
		return fresh, b.run()
	}
	st, err := a.readStructureLocked()
	if err != nil {
		return fresh, err
	}
	rebuildRules := !slices.Equal(st.ruleTags, a.ruleTags())
	var recreate []*nftables.Set
	if st.table {
		for i, f := range a.fams {
			if f == nil {
				continue
			}
			s, ok := st.sets[f.set.Name]
			switch {
			case !ok:
				fresh[i] = true
			case !s.Interval || !s.HasTimeout || s.KeyType.Name != f.set.KeyType.Name:
				a.log.Warn("set has the wrong type or flags, making it again", "set", f.set.Name,
					"type", s.KeyType.Name, "interval", s.Interval, "timeout", s.HasTimeout)
				recreate = append(recreate, f.set)
				fresh[i] = true
				rebuildRules = true
			}
		}
	} else {
		fresh = [2]bool{true, true}
	}
	chainOK := st.chain != nil && st.chain.Type == nftables.ChainTypeFilter &&
		st.chain.Hooknum != nil && *st.chain.Hooknum == *nftables.ChainHookInput &&
		st.chain.Priority != nil && *st.chain.Priority == *a.chain.Priority
	if !chainOK {
		rebuildRules = true
	}
	if !st.table || rebuildRules || fresh != [2]bool{} {
		if st.chain != nil && rebuildRules {
			b.flushChain(a.chain)
		}
		if st.chain != nil && !chainOK {
			b.delChain(a.chain)
		}
		for _, s := range recreate {
			b.delSet(s)
		}
		b.addTable(a.table)
		for i, f := range a.fams {
			if f != nil && fresh[i] {
				b.addSet(f.set)
			}
		}
		if !chainOK {
			b.addChain(a.chain)
		}
		if rebuildRules {
			a.addRules(b)
		}
		if err := b.run(); err != nil {
			return fresh, fmt.Errorf("make table %s: %w", a.cfg.Table, err)
		}
		a.log.Info("table made or repaired", "table", a.cfg.Table, "had_table", st.table, "chain_ok", chainOK,
			"rules_rebuilt", rebuildRules, "sets_made", fresh)
	}
	a.ready = true
	return fresh, nil
}

type nftStructure struct {
	table    bool
	sets     map[string]*nftables.Set
	chain    *nftables.Chain
	ruleTags []string
	foreign  []string // chains in the table that are not ours
}

// readStructureLocked lists our table with dumps (a missing object is an
// empty answer, not an error to tell apart from others).
func (a *NFTables) readStructureLocked() (nftStructure, error) {
	var st nftStructure
	tables, err := a.conn.ListTablesOfFamily(a.table.Family)
	if err != nil {
		return st, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		st.table = st.table || t.Name == a.table.Name
	}
	if !st.table {
		return st, nil
	}
	sets, err := a.conn.GetSets(a.table)
	if err != nil {
		return st, fmt.Errorf("list sets: %w", err)
	}
	st.sets = map[string]*nftables.Set{}
	for _, s := range sets {
		st.sets[s.Name] = s
	}
	chains, err := a.conn.ListChainsOfTableFamily(a.table.Family)
	if err != nil {
		return st, fmt.Errorf("list chains: %w", err)
	}
	for _, c := range chains {
		switch {
		case c.Table.Name != a.table.Name:
		case c.Name == a.chain.Name:
			st.chain = c
		default:
			st.foreign = append(st.foreign, "chain "+c.Name)
		}
	}
	if len(st.foreign) > 0 {
		// Someone else's table (Debian's inet filter, firewalld's): never
		// adopt, repair or delete it. Ours has one chain, whose rules all
		// carry our comment (checked below); a set alone says nothing
		// (set_v4/set_v6 renamed leave our old ones behind).
		return st, fmt.Errorf("table %s %s exists and holds %s, which are not mxguard's: choose another actions.nftables.table, or set_only: true to fill sets of your own",
			a.cfg.Family, a.cfg.Table, strings.Join(st.foreign, ", "))
	}
	if st.chain == nil {
		return st, nil
	}
	rules, err := a.conn.GetRules(a.table, a.chain)
	if err != nil {
		return st, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		tag, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		st.ruleTags = append(st.ruleTags, tag)
		if !strings.HasPrefix(tag, "mxguard: ") {
			// a chain of our name with rules we did not write (Debian's
			// "table inet filter" has a "chain input" too)
			return st, fmt.Errorf("table %s %s exists and its chain %s holds rules that are not mxguard's: choose another actions.nftables.table, or set_only: true to fill sets of your own",
				a.cfg.Family, a.cfg.Table, a.chain.Name)
		}
	}
	return st, nil
}

// loadAdminSetsLocked reads the administrator's sets (set_only): they
// must exist and hold addresses of the right family. Their flags decide
// what the elements carry.
func (a *NFTables) loadAdminSetsLocked() error {
	for _, f := range a.fams {
		if f == nil {
			continue
		}
		name := f.set.Name
		s, err := a.conn.GetSetByName(a.table, name)
		if err != nil {
			return fmt.Errorf("nftables: set_only: set %s in table %s %s: %w (mxguard does not create it in set_only mode)",
				name, a.cfg.Family, a.cfg.Table, err)
		}
		want := nftables.TypeIPAddr
		if !f.is4 {
			want = nftables.TypeIP6Addr
		}
		if s.KeyType.Name != want.Name {
			return fmt.Errorf("nftables: set_only: set %s in table %s %s has type %s, want %s",
				name, a.cfg.Family, a.cfg.Table, s.KeyType.Name, want.Name)
		}
		s.Table = a.table
		if !a.ready && (!s.Interval || !s.HasTimeout) {
			a.log.Warn("set_only: set lacks flags; without interval only single addresses can be banned, without timeout bans end only when mxguard revokes them",
				"set", name, "interval", s.Interval, "timeout", s.HasTimeout)
		}
		f.set = s
	}
	return nil
}

// Close implements ban.Action: it closes the netlink connection (a later
// call opens a new one). Table, sets and elements stay: the kernel keeps
// enforcing the bans (and lets them expire) while mxguard is down.
func (a *NFTables) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return nil
	}
	err := a.conn.CloseLasting()
	a.conn = nil
	return err
}

// Cleanup deletes our table (for --cleanup). In set_only mode it deletes
// no table, set or rule: only the elements mxguard added.
func (a *NFTables) Cleanup(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready = false
	if err := a.openLocked(); err != nil {
		return fmt.Errorf("nftables: cleanup: %w", err)
	}
	if a.cfg.SetOnly {
		return a.cleanupElementsLocked(ctx)
	}
	if a.conn != nil {
		st, err := a.readStructureLocked()
		if err != nil {
			return fmt.Errorf("nftables: cleanup: %w", err)
		}
		if !st.table {
			return nil
		}
	}
	b := a.batch()
	b.delTable(a.table)
	if err := b.run(); err != nil {
		return fmt.Errorf("nftables: cleanup: delete table %s: %w", a.cfg.Table, err)
	}
	return nil
}

func (a *NFTables) cleanupElementsLocked(ctx context.Context) error {
	var errs []error
	for _, f := range a.fams {
		if f == nil || a.conn == nil {
			continue
		}
		elems, err := a.conn.GetSetElements(f.set)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s: %w", f.set.Name, err))
			continue
		}
		var ours []nftInterval
		for _, iv := range kernelIntervals(elems, f.set.Interval, f.is4) {
			if iv.comment == nftElemComment {
				ours = append(ours, iv)
			}
		}
		if err := a.sendChunksLocked(ctx, f, ours, nil, nil); err != nil {
			errs = append(errs, fmt.Errorf("delete from %s: %w", f.set.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nftables: cleanup: %w", err)
	}
	return nil
}
