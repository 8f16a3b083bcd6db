package daemon

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
)

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
