package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/smtpguard"
)

// runGuard is `mxguard guard`: the daemon with the inline SMTP guard
// switched on, so the guard and the log tailer (when `logs` is not empty)
// feed one set of detectors and one block list.
func runGuard(e *env, args []string) error {
	fs := newFlagSet(e, "guard", "",
		"Run the inline SMTP guard in front of the MTA (and, when `logs` is set, the log tailer beside it).\n"+
			"Good clients are handed to the upstream with XCLIENT or the PROXY protocol; the flags override the config.")
	cfgPath := fs.String("config", "", "config file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	listen := fs.String("listen", "", "address to listen on (guard.listen)")
	upstream := fs.String("upstream", "", "upstream MTA host:port (guard.upstream)")
	dryRun := fs.Bool("dry-run", false, "log would-be bans; touch neither the block list nor the firewall")
	if err := parseFlagsOnly(e, fs, args); err != nil {
		return err
	}
	cfg, path, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *dryRun {
		cfg.DryRun = true
	}
	gcfg, err := guardConfig(cfg)
	if err != nil {
		return &configError{err}
	}
	gcfg.Enabled = true
	if *listen != "" {
		gcfg.Listen = *listen
	}
	if *upstream != "" {
		gcfg.Upstream = *upstream
	}
	if err := gcfg.Validate(); err != nil {
		return &configError{err}
	}
	return runUntilSignal(cfg, daemonOptions{configPath: path, logOut: e.stderr, guard: &gcfg})
}

// guardConfig decodes and validates the `guard:` section over the defaults.
// The greylist database lives in state_dir unless configured.
func guardConfig(cfg *config.Config) (smtpguard.Config, error) {
	g := smtpguard.DefaultConfig()
	if err := cfg.DecodeGuard(&g); err != nil {
		return g, err
	}
	if g.Greylist.Enabled && g.Greylist.DB == "" {
		g.Greylist.DB = filepath.Join(cfg.StateDir, "greylist.db")
	}
	if err := g.Validate(); err != nil {
		return g, err
	}
	return g, nil
}

// startGuard runs the guard until ctx is done; its events go through the
// daemon's pipeline (the same detectors and ban manager as the log lines).
func (d *daemon) startGuard(ctx context.Context, gcfg smtpguard.Config, bl *banSnapshot, wg *sync.WaitGroup) (*smtpguard.Guard, error) {
	g, err := smtpguard.New(gcfg, smtpguard.Deps{
		Logger:    d.log.With("component", "guard"),
		Sink:      func(ev event.Event) { d.pipe.HandleEvent(ctx, ev) },
		Blocklist: bl,
		// With logs tailed, Postfix's own reject lines (real client via
		// XCLIENT) are the evidence for its refusals; the guard's copies
		// would count them twice.
		UpstreamLogged: d.follower != nil,
	})
	if err != nil {
		return nil, &configError{err}
	}
	// Listen here, not in the goroutine: a port in use must stop the start.
	l, err := net.Listen("tcp", gcfg.Listen)
	if err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(sctx) // closes the greylist database
		return nil, fmt.Errorf("guard.listen %s: %w", gcfg.Listen, err)
	}
	d.guardErr = make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := g.Serve(ctx, l); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("guard stopped", "err", err)
			d.guardErr <- err
		}
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = g.Shutdown(sctx)
	}()
	return g, nil
}

// banSnapshot answers the guard's per-connection block-list lookups from
// memory: single addresses in a map, wider prefixes (escalation, manual
// CIDR bans) in a short list. New bans and unbans made in this process are
// added and removed at once; a full reload from the store (which decodes
// every record) runs only every refreshEvery, to pick up expiries.
type banSnapshot struct {
	mgr       *ban.Manager
	refreshMu sync.Mutex // one reload at a time

	mu       sync.RWMutex
	addrs    map[netip.Addr]snapEntry
	prefixes map[netip.Prefix]snapEntry
	// While a reload reads the store, adds and removes are also logged
	// here and replayed onto the new maps, so none is lost in the swap.
	loading bool
	ops     []snapOp
}

type snapOp struct {
	ban    ban.Ban
	remove bool
}

type snapEntry struct {
	reason string
	until  time.Time
}

const refreshEvery = time.Minute

func newBanSnapshot(mgr *ban.Manager) *banSnapshot {
	b := &banSnapshot{mgr: mgr}
	b.refresh()
	return b
}

// refresh reloads every active ban from the manager.
func (b *banSnapshot) refresh() {
	b.refreshMu.Lock()
	defer b.refreshMu.Unlock()
	b.mu.Lock()
	b.loading, b.ops = true, nil
	b.mu.Unlock()
	now := time.Now()
	list, err := b.mgr.List(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	ops := b.ops
	b.loading, b.ops = false, nil
	if err != nil {
		return // keep the last good snapshot
	}
	addrs := make(map[netip.Addr]snapEntry, len(list))
	prefixes := map[netip.Prefix]snapEntry{}
	for _, ban := range list {
		if !ban.DryRun && ban.Active(now) {
			snapPut(addrs, prefixes, ban)
		}
	}
	for _, op := range ops {
		if op.remove {
			snapDelete(addrs, prefixes, op.ban.Prefix)
		} else {
			snapPut(addrs, prefixes, op.ban)
		}
	}
	b.addrs, b.prefixes = addrs, prefixes
}

func snapPut(addrs map[netip.Addr]snapEntry, prefixes map[netip.Prefix]snapEntry, ban ban.Ban) {
	e := snapEntry{reason: ban.Reason, until: ban.Until}
	if ban.Prefix.IsSingleIP() {
		addrs[ban.Prefix.Addr()] = e
	} else {
		prefixes[ban.Prefix] = e
	}
}

func snapDelete(addrs map[netip.Addr]snapEntry, prefixes map[netip.Prefix]snapEntry, p netip.Prefix) {
	if p.IsSingleIP() {
		delete(addrs, p.Addr())
	} else {
		delete(prefixes, p)
	}
}

// add records a ban made in this process.
func (b *banSnapshot) add(ban ban.Ban) {
	if ban.DryRun || !ban.Active(time.Now()) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	snapPut(b.addrs, b.prefixes, ban)
	if b.loading {
		b.ops = append(b.ops, snapOp{ban: ban})
	}
}

// remove forgets a lifted ban.
func (b *banSnapshot) remove(p netip.Prefix) {
	b.mu.Lock()
	defer b.mu.Unlock()
	snapDelete(b.addrs, b.prefixes, p)
	if b.loading {
		b.ops = append(b.ops, snapOp{ban: ban.Ban{Prefix: p}, remove: true})
	}
}

func (b *banSnapshot) run(ctx context.Context) {
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.refresh()
		}
	}
}

// Banned implements smtpguard.Blocklist.
func (b *banSnapshot) Banned(a netip.Addr) (string, bool) {
	a = a.Unmap()
	now := time.Now()
	b.mu.RLock()
	defer b.mu.RUnlock()
	if e, ok := b.addrs[a]; ok && now.Before(e.until) {
		return e.reason, true
	}
	for p, e := range b.prefixes {
		if p.Contains(a) && now.Before(e.until) {
			return e.reason, true
		}
	}
	return "", false
}

// refreshingDecider adds every new ban to the guard's snapshot, so the
// banned client's next connection is refused at once.
type refreshingDecider struct {
	*ban.Manager
	snap *banSnapshot
}

func (r refreshingDecider) Decide(ctx context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	b, banned, err := r.Manager.Decide(ctx, d)
	if banned && r.snap != nil {
		r.snap.add(b)
	}
	return b, banned, err
}
