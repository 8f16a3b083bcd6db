package ban

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/prefixes"
)

// Errors returned by Manager.Ban (manual bans) when a ban is refused.
var (
	ErrAllowlisted    = errors.New("prefix overlaps the allowlist")
	ErrPrefixTooBroad = errors.New("prefix is broader than the configured maximum")
)

// DetectorManual is the detector name of bans made with Manager.Ban.
const DetectorManual = "manual"

// Store is the block list the Manager decides over: the bbolt
// *store.Store in the daemon, a *store.Memory in replay (and, seeded from
// the real one, in dry-run). Active returns records without their evidence
// lines; Get fills them.
type Store interface {
	Get(p netip.Prefix) (store.Record, bool, error)
	// Put records a new offence, or an extension when a record with the
	// same Since and Offence exists.
	Put(r store.Record) error
	Delete(p netip.Prefix, now time.Time) (bool, error)
	Active(now time.Time) ([]store.Record, error)
	DeleteExpired(now time.Time) ([]store.Record, error)
	History(p netip.Prefix) (store.History, bool, error)
	Ledger(p netip.Prefix, limit int) ([]store.LedgerEntry, error)
	Prune(before time.Time, limit int) (ledger, history int, err error)
}

// Manager turns decisions into bans: validate, allowlist, escalate, record
// in the store first, then apply to every action. Each action has its own
// worker goroutine and retry queue, so a failing or slow action never holds
// up the others or the caller. An in-memory index of the bans in force
// answers Lookup, Banned and List. Safe for concurrent use.
type Manager struct {
	cfg     ManagerConfig
	store   Store // in dry-run a memory copy: the real store is only read
	allow   *Allowlist
	log     *slog.Logger
	index   *banIndex
	workers []*worker
	persist *persistQueue                // records the store refused, guarded by mu
	mirrors map[netip.Prefix][]mirrorBan // peers' bans (mirror.go), guarded by mu; never stored
	// wouldBe holds a dry run's would-be bans of prefixes whose index entry
	// is a real (or mirrored) ban in force: the index keeps the real one
	// enforced until it ends, then the would-be ban takes its place.
	// Guarded by mu; always empty outside a dry run.
	wouldBe map[netip.Prefix]Ban

	mu       sync.Mutex // serialises decisions: history read → store write → index
	perDet   map[string]*DetectorStats
	subs     banSubscribers // OnBan
	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// DetectorStats counts what happened to one detector's decisions.
type DetectorStats struct {
	Decisions uint64 `json:"decisions"` // every Decide call
	Bans      uint64 `json:"bans"`      // new bans (or would-be bans in dry-run)
	Extended  uint64 `json:"extended"`  // decisions for an already banned prefix
	Refused   uint64 `json:"refused"`   // allowlisted or too broad
	Warned    uint64 `json:"warned"`    // warn-mode decisions
}

// ActionStatus is the health of one action.
type ActionStatus struct {
	Name        string    `json:"name"`
	Pending     int       `json:"pending"`  // calls queued (first attempt or retry)
	Retrying    int       `json:"retrying"` // of those, calls that failed at least once
	SyncPending bool      `json:"sync_pending,omitempty"`
	Applied     uint64    `json:"applied"`
	Revoked     uint64    `json:"revoked"`
	Failures    uint64    `json:"failures"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastOK      time.Time `json:"last_ok,omitzero"`
}

// ManagerStatus is a snapshot for `mxguard status`.
type ManagerStatus struct {
	DryRun     bool                     `json:"dry_run"`
	ActiveBans int                      `json:"active_bans"`            // real bans in force
	DryRunBans int                      `json:"dry_run_bans,omitempty"` // would-be bans (and extensions) in force
	Mirrored   map[string]int           `json:"mirrored,omitempty"`     // peer name → its bans in force here (shadowed ones too)
	Actions    []ActionStatus           `json:"actions"`
	Detectors  map[string]DetectorStats `json:"detectors"`
	Persist    PersistStatus            `json:"persist"`
}

// Explanation is everything known about one prefix.
type Explanation struct {
	Prefix  netip.Prefix        `json:"prefix"`
	Banned  bool                `json:"banned"`           // an active ban exists now
	Record  *store.Record       `json:"record,omitempty"` // stored record (may be expired, not yet swept)
	DryRun  *Ban                `json:"dry_run,omitempty"`
	History *store.History      `json:"history,omitempty"`
	Ledger  []store.LedgerEntry `json:"ledger,omitempty"` // newest first, at most 20
	Allowed bool                `json:"allowlisted"`
	// Peers are the peers' listings of exactly this prefix in force
	// (Detector peer:NAME); the first is enforced unless Record is.
	Peers []Ban `json:"peers,omitempty"`

	// PersistPending: Record is queued, not yet written (the store refuses writes).
	PersistPending bool `json:"persist_pending,omitempty"`
}

// NewManager builds a Manager over st, loads the bans in force into its
// index and starts one worker goroutine per action. st must be open (it is
// not closed by the Manager); in dry-run it is only read: the Manager
// decides over a memory copy of it. logger nil means discard. Call Restore
// once at start, Run for periodic expiry, and Close at the end.
func NewManager(cfg ManagerConfig, st Store, actions []Action, logger *slog.Logger) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Ban.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("ban: NewManager: nil store")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	allow, err := NewAllowlist(cfg.Allowlist, cfg.AllowSources...)
	if err != nil {
		if allow == nil {
			return nil, fmt.Errorf("allowlist: %w", err)
		}
		logger.Warn("allowlist source failed", "err", err)
	}
	if cfg.DryRun {
		if st, err = newDryRunStore(st, cfg.Now()); err != nil {
			return nil, err
		}
	}
	m := &Manager{cfg: cfg, store: st, allow: allow, log: logger, index: newBanIndex(),
		perDet: map[string]*DetectorStats{}, persist: newPersistQueue(cfg.PersistQueueMax),
		mirrors: map[netip.Prefix][]mirrorBan{}, wouldBe: map[netip.Prefix]Ban{}}
	if err := m.loadIndex(cfg.Now()); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, a := range actions {
		if a == nil {
			continue
		}
		if seen[a.Name()] {
			return nil, fmt.Errorf("actions: two actions named %q", a.Name())
		}
		seen[a.Name()] = true
		w := &worker{m: m, act: a, pending: map[netip.Prefix]*pendingOp{}, wake: make(chan struct{}, 1)}
		m.workers = append(m.workers, w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, w := range m.workers {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			w.loop(ctx)
		}()
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.persistLoop(ctx)
	}()
	return m, nil
}

// loadIndex fills the index with the store's bans in force at now.
func (m *Manager) loadIndex(now time.Time) error {
	recs, err := m.store.Active(now)
	if err != nil {
		return fmt.Errorf("load active bans: %w", err)
	}
	bans := make([]Ban, len(recs))
	for i, r := range recs {
		bans[i] = FromRecord(r) // seeded or real: not the dry run's own
	}
	m.index.replace(bans)
	return nil
}

// Close stops the workers (pending retries are dropped: Restore at the next
// start reconciles), makes a last attempt to write the bans the store
// refused so far, and closes every action. The store stays open.
func (m *Manager) Close() error {
	var errs []error
	m.stopOnce.Do(func() {
		m.cancel()
		m.wg.Wait()
		m.closePersist()
		for _, w := range m.workers {
			if err := w.act.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", w.act.Name(), err))
			}
		}
	})
	return errors.Join(errs...)
}

func canon(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, errors.New("invalid prefix")
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("prefix %s has a zone", p)
	}
	return prefixes.Unmap(p).Masked(), nil
}

// ParsePrefix parses "203.0.113.7", "203.0.113.0/24", "2001:db8::/48"
// or an IPv4-mapped form into a canonical prefix (for the control socket).
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			// 203.0.113.7/24 is most likely a typo: say so rather than
			// ban the whole network silently
			return netip.Prefix{}, fmt.Errorf("%q has host bits set: did you mean %s or %s?", s, p.Masked(), p.Addr())
		}
		return canon(p)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (m *Manager) stats(detector string) *DetectorStats {
	s := m.perDet[detector]
	if s == nil {
		s = &DetectorStats{}
		m.perDet[detector] = s
	}
	return s
}

// check returns nil or the reason the prefix must not be banned.
func (m *Manager) check(p netip.Prefix) error {
	if m.allow.Contains(p) {
		return ErrAllowlisted
	}
	if tooBroad(p, m.cfg.Ban.MaxPrefixV4, m.cfg.Ban.MaxPrefixV6) {
		return ErrPrefixTooBroad
	}
	return nil
}

// logDecision logs what decide, Unban and Expire did; in dry-run the
// message says "would" and the line is marked dry_run.
func (m *Manager) logDecision(msg, dryMsg string, args ...any) {
	if m.cfg.DryRun {
		m.log.Info(dryMsg, append(args, "dry_run", true)...)
		return
	}
	m.log.Info(msg, args...)
}

// Decide acts on a detector decision. It returns the ban in force for the
// prefix and true when the prefix is (now) banned - a new ban or an
// extension - and false when the decision was refused (allowlisted, too
// broad), is warn-only, or invalid (with an error). In dry-run the ban is
// marked DryRun and recorded only in the dry run's memory store; the
// actions it was given are expected to be dry-run printers (see the daemon).
func (m *Manager) Decide(ctx context.Context, d detectors.Decision) (Ban, bool, error) {
	return m.decide(ctx, d, 0, false)
}

// Ban bans prefix by hand (detector "manual"). duration 0 uses the
// escalation schedule. Refusals are errors (ErrAllowlisted,
// ErrPrefixTooBroad). An existing longer ban is kept (until = max).
func (m *Manager) Ban(ctx context.Context, prefix netip.Prefix, duration time.Duration, reason string) (Ban, error) {
	if reason == "" {
		reason = "manual ban"
	}
	if duration < 0 {
		return Ban{}, fmt.Errorf("ban %s: negative duration %s", prefix, duration)
	}
	b, _, err := m.decide(ctx, detectors.Decision{Prefix: prefix, Detector: DetectorManual,
		Reason: reason, Evidence: 0}, duration, true)
	return b, err
}

// decide is the one ban decision of the daemon, its dry-run and replay.
func (m *Manager) decide(_ context.Context, d detectors.Decision, fixed time.Duration, manual bool) (Ban, bool, error) {
	p, err := canon(d.Prefix)
	if err != nil {
		return Ban{}, false, fmt.Errorf("decision from %s: %w", d.Detector, err)
	}
	now := m.cfg.Now()
	t := d.Time
	if t.IsZero() || t.After(now) {
		// A stamp ahead of the clock (a wrong clock or zone on the log's
		// host, a forged line) must not date the ban: until would be
		// beyond now + its duration, and the offence would count for years.
		t = now
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats(d.Detector)
	st.Decisions++
	if err := m.check(p); err != nil {
		st.Refused++
		m.log.Info("ban refused", "ip", p, "detector", d.Detector, "reason", d.Reason, "why", err.Error())
		if manual {
			return Ban{}, false, fmt.Errorf("ban %s: %w", p, err)
		}
		return Ban{}, false, nil
	}
	if d.Warn {
		st.Warned++
		m.log.Info("warn", "ip", p, "detector", d.Detector, "reason", d.Reason, "evidence", d.Evidence)
		return Ban{}, false, nil
	}

	old, exists, err := m.current(p)
	if err != nil {
		return Ban{}, false, err
	}
	if exists && old.Until.After(t) && old.Until.After(now) {
		// Already banned: extend, same offence, no new history entry.
		rec := old
		until := t.Add(m.durationFor(old.Offence, fixed))
		if until.After(rec.Until) {
			rec.Until = until
		}
		if t.After(rec.LastSeen) {
			rec.LastSeen = t
		}
		rec.Evidence += d.Evidence
		rec.Lines = keepLines(rec.Lines, d.Lines)
		if err := m.record(rec); err != nil {
			return Ban{}, false, err
		}
		st.Extended++
		b := m.banOf(rec)
		m.indexBan(b, now)
		m.notifyBan(b)
		m.logDecision("ban extended", "would extend ban", "ip", p, "detector", d.Detector, "reason", d.Reason,
			"evidence", rec.Evidence, "offence", rec.Offence, "until", rec.Until)
		if rec.Until.After(old.Until) { // let backends with timeouts follow
			m.enqueueApply(b)
		}
		return b, true, nil
	}

	offence, err := m.offence(p, t)
	if err != nil {
		return Ban{}, false, err
	}
	rec := store.Record{
		Prefix: p, Detector: d.Detector, Reason: d.Reason, Evidence: d.Evidence,
		Lines: keepLines(nil, d.Lines), FirstSeen: t, LastSeen: t,
		Since: t, Until: t.Add(m.durationFor(offence, fixed)), Offence: offence,
	}
	if err := m.record(rec); err != nil {
		return Ban{}, false, err
	}
	st.Bans++
	b := m.banOf(rec)
	// A decision from an old log line may be over already: it must not
	// hide a peer's ban in force.
	if cur, ok := m.index.get(p); !ok || !cur.Mirrored() || !cur.Until.After(now) || rec.Until.After(now) {
		m.indexBan(b, now)
	}
	m.notifyBan(b)
	m.logDecision("ban", "would ban", "ip", p, "detector", d.Detector, "reason", d.Reason,
		"evidence", rec.Evidence, "offence", offence, "until", rec.Until)
	if rec.Until.After(now) { // a decision from an old log line may be over already
		m.enqueueApply(b)
	}
	return b, true, nil
}

// indexBan puts b, a ban decide made, in the index; m.mu is held. A dry
// run's would-be ban never replaces a real or mirrored ban in force for
// the same prefix, which would stop being enforced: it waits in m.wouldBe
// until the real one ends (promoteWouldBe).
func (m *Manager) indexBan(b Ban, now time.Time) {
	if b.DryRun {
		if cur, ok := m.index.get(b.Prefix); ok && !cur.DryRun && cur.Active(now) {
			m.wouldBe[b.Prefix] = b
			return
		}
	}
	delete(m.wouldBe, b.Prefix)
	m.index.set(b)
}

// promoteWouldBe puts the would-be bans whose real ban has ended in the
// index, and forgets those over at now; m.mu is held.
func (m *Manager) promoteWouldBe(now time.Time) {
	for p, b := range m.wouldBe {
		if !b.Active(now) {
			delete(m.wouldBe, p)
			continue
		}
		if cur, ok := m.index.get(p); !ok || cur.DryRun || !cur.Active(now) {
			delete(m.wouldBe, p)
			m.index.set(b)
		}
	}
}

// banOf is the ban a record written by decide stands for.
func (m *Manager) banOf(r store.Record) Ban {
	b := FromRecord(r)
	b.DryRun = m.cfg.DryRun
	return b
}

func (m *Manager) durationFor(offence int, fixed time.Duration) time.Duration {
	if fixed > 0 {
		return fixed
	}
	return m.cfg.Ban.Duration(offence)
}

// offence is 1 + the offences of p in (t - forget_after, t]: offences
// recorded after t (an old log line read late) do not count; one queued
// for the store does.
func (m *Manager) offence(p netip.Prefix, t time.Time) (int, error) {
	h, _, err := m.store.History(p)
	if err != nil {
		return 0, fmt.Errorf("ban %s: %w: %w", p, ErrNotRecorded, err)
	}
	cut := t.Add(-time.Duration(m.cfg.Ban.ForgetAfter))
	n := 1
	for _, at := range h.Times {
		if at.After(cut) && !at.After(t) {
			n++
		}
	}
	return n + m.queuedOffences(p, h.Times, cut, t), nil
}

func keepLines(old, add []string) []string {
	out := append(append([]string(nil), old...), add...)
	if len(out) > store.MaxLines {
		out = out[len(out)-store.MaxLines:]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Unban lifts the ban on prefix (exactly that prefix) and revokes it from
// every action; the offence history is kept. It reports whether a ban
// existed. Revoke is sent to the actions even if none was stored
// (idempotent clean-up).
func (m *Manager) Unban(ctx context.Context, prefix netip.Prefix) (bool, error) {
	p, err := canon(prefix)
	if err != nil {
		return false, fmt.Errorf("unban: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unbanLocked(p)
}

func (m *Manager) unbanLocked(p netip.Prefix) (bool, error) {
	now := m.cfg.Now()
	found, err := m.store.Delete(p, now)
	queued, err := m.unqueue(p, now, err)
	if err != nil {
		return false, err
	}
	found = found || queued
	// An explicit unban (or a recheck) lifts the peers' listings too; a
	// peer that still lists the prefix mirrors it again at its next
	// transfer: allowlist it to keep it unbanned.
	if _, ok := m.mirrors[p]; ok {
		delete(m.mirrors, p)
		found = true
	}
	delete(m.wouldBe, p)
	m.index.remove(p)
	m.logDecision("unban", "would unban", "ip", p, "found", found)
	m.enqueueRevoke(p)
	return found, nil
}

// Lookup returns the ban in force at now of the longest banned prefix
// that contains a, a dry run's would-be bans included (what the index
// shows). It allocates nothing.
func (m *Manager) Lookup(a netip.Addr, now time.Time) (Ban, bool) {
	return m.index.lookup(a, now, false)
}

// LookupEnforced is Lookup for enforcement (the policy service's block
// list): the longest ban in force that is not a dry run's would-be ban.
// A would-be ban is never enforced, and must not hide a real, shorter
// ban around it. It allocates nothing.
func (m *Manager) LookupEnforced(a netip.Addr, now time.Time) (Ban, bool) {
	return m.index.lookup(a, now, true)
}

// Banned reports whether a is banned now, and why (the guard's block
// list); as LookupEnforced.
func (m *Manager) Banned(a netip.Addr) (reason string, ok bool) {
	b, ok := m.index.lookup(a, m.cfg.Now(), true)
	return b.Reason, ok
}

// List returns the bans active at now, sorted by prefix. In dry-run these
// are the dry run's: the real bans it started from plus its would-be bans
// (marked DryRun).
func (m *Manager) List(now time.Time) ([]Ban, error) {
	out := m.index.active(now)
	sortBans(out)
	return out, nil
}

func sortBans(bs []Ban) {
	slices.SortFunc(bs, func(a, b Ban) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
}

// Explain returns the record (with evidence lines), offence history and the
// recent ledger entries of prefix (in dry-run: as the dry run sees them).
func (m *Manager) Explain(prefix netip.Prefix) (Explanation, error) {
	p, err := canon(prefix)
	if err != nil {
		return Explanation{}, fmt.Errorf("explain: %w", err)
	}
	now := m.cfg.Now()
	ex := Explanation{Prefix: p, Allowed: m.allow.Contains(p)}
	rec, ok, err := m.store.Get(p)
	if err != nil {
		return Explanation{}, err
	}
	m.mu.Lock()
	if q, queued := m.persist.get(p); queued {
		rec, ok, ex.PersistPending = q, true, true
	}
	ex.Peers = m.mirrorsOf(p, now)
	m.mu.Unlock()
	if ok {
		ex.Record = &rec
		ex.Banned = rec.Until.After(now)
	}
	if len(ex.Peers) > 0 && !m.cfg.DryRun {
		ex.Banned = true
	}
	if h, ok, err := m.store.History(p); err != nil {
		return Explanation{}, err
	} else if ok {
		ex.History = &h
	}
	if ex.Ledger, err = m.store.Ledger(p, 20); err != nil {
		return Explanation{}, err
	}
	if b, ok := m.index.get(p); ok && b.DryRun {
		ex.DryRun = &b
	}
	m.mu.Lock()
	if b, ok := m.wouldBe[p]; ok {
		ex.DryRun = &b
	}
	m.mu.Unlock()
	return ex, nil
}

// Expire sweeps the bans whose Until is at or before now: deletes them
// from the store (history kept) and revokes them from every action. It
// returns how many expired.
func (m *Manager) Expire(ctx context.Context, now time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	queued := m.expireQueued(now)
	recs, err := m.store.DeleteExpired(now)
	if err != nil {
		return queued, err
	}
	for _, r := range recs {
		if m.queuedInForce(r.Prefix) { // extended, the extension not yet written
			continue
		}
		m.logDecision("ban expired", "dry-run ban expired", "ip", r.Prefix, "detector", r.Detector, "until", r.Until)
		m.localGone(r.Prefix, now)
	}
	n := queued + len(recs) + m.expireMirrors(now)
	m.promoteWouldBe(now)
	return n, nil
}

// Run expires bans and refreshes the allowlist's host addresses every
// SweepInterval until ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.allow.Refresh(); err != nil {
				m.log.Warn("allowlist refresh failed", "err", err)
			}
			now := m.cfg.Now()
			if _, err := m.Expire(ctx, now); err != nil {
				m.log.Error("expire bans", "err", err)
			}
			if now.Sub(lastPrune) >= time.Hour {
				lastPrune = now
				l, h, err := m.store.Prune(now.Add(-time.Duration(m.cfg.Ban.LedgerRetention)), 10000)
				if err != nil {
					m.log.Error("prune ledger", "err", err)
				} else if l+h > 0 {
					m.log.Info("pruned ledger", "entries", l, "histories", h)
				}
			}
		}
	}
}

// Restore brings every action in line with the active bans (Sync) at
// start: it sweeps expired bans, lifts those no longer allowed (Recheck)
// and syncs the bans of the index (loaded from the store by NewManager;
// the Manager is the only writer of its store). It waits for each action's
// first sync attempt (or ctx) and returns their errors joined; failed
// syncs keep being retried in the background. In dry-run it does nothing:
// the actions are printers and there is nothing of the dry run's to sync.
func (m *Manager) Restore(ctx context.Context) error {
	if m.cfg.DryRun {
		return nil
	}
	if _, err := m.Expire(ctx, m.cfg.Now()); err != nil {
		return err
	}
	if _, err := m.Recheck(ctx); err != nil {
		return err
	}
	// Each worker answers this call with the result of the first sync
	// attempt made after the request: a retry that succeeds before we look
	// must not hide that the first attempt failed.
	results := make([]<-chan error, len(m.workers))
	for i, w := range m.workers {
		results[i] = w.requestSync()
	}
	if err := m.Flush(ctx); err != nil {
		return err
	}
	var errs []error
	for i, w := range m.workers {
		select {
		case err := <-results[i]:
			if err != nil {
				errs = append(errs, fmt.Errorf("sync %s: %w", w.act.Name(), err))
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// Recheck lifts the active bans that the current allowlist or prefix
// limits no longer allow (an address allowlisted after it was banned, a
// max_prefix narrowed), so that neither a restart nor a reload puts them
// back into the firewall. It returns how many it lifted.
func (m *Manager) Recheck(ctx context.Context) (int, error) {
	if err := m.allow.Refresh(); err != nil {
		m.log.Warn("allowlist refresh failed", "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var lift []netip.Prefix
	var why []error
	m.index.each(func(p netip.Prefix, _ indexEntry) {
		if err := m.check(p); err != nil {
			lift, why = append(lift, p), append(why, err)
		}
	})
	for i, p := range lift {
		m.log.Warn("unban: no longer allowed", "ip", p, "why", why[i].Error())
		if _, err := m.unbanLocked(p); err != nil {
			return i, err
		}
	}
	return len(lift) + m.recheckMirrors(m.cfg.Now()), nil
}

// Flush waits until every queued action call has been attempted at least
// once (retries may still be pending), or ctx is done.
func (m *Manager) Flush(ctx context.Context) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		busy := false
		for _, w := range m.workers {
			if w.fresh() {
				busy = true
				break
			}
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Status reports active bans, per-action health and per-detector counts.
func (m *Manager) Status() (ManagerStatus, error) {
	st := ManagerStatus{DryRun: m.cfg.DryRun, Detectors: map[string]DetectorStats{}}
	now := m.cfg.Now()
	st.ActiveBans, st.DryRunBans = m.index.count(now)
	m.mu.Lock()
	for _, b := range m.wouldBe {
		if b.Active(now) {
			st.DryRunBans++
		}
	}
	for k, v := range m.perDet {
		st.Detectors[k] = *v
	}
	st.Persist = m.persistStatus()
	st.Mirrored = m.mirrorCounts(m.cfg.Now())
	m.mu.Unlock()
	for _, w := range m.workers {
		st.Actions = append(st.Actions, w.status())
	}
	return st, nil
}

func (m *Manager) enqueueApply(b Ban) {
	for _, w := range m.workers {
		w.enqueue(&pendingOp{ban: b})
	}
}

func (m *Manager) enqueueRevoke(p netip.Prefix) {
	for _, w := range m.workers {
		w.enqueue(&pendingOp{ban: Ban{Prefix: p}, revoke: true})
	}
}

// pendingOp is the desired state of one prefix in one action. A newer op
// for the same prefix replaces an older one not yet done.
type pendingOp struct {
	ban      Ban
	revoke   bool
	attempts int
	next     time.Time // earliest (real) time of the next attempt
}

// worker owns one action: it runs its calls one at a time with a
// timeout and retries failures with exponential backoff.
type worker struct {
	m    *Manager
	act  Action
	wake chan struct{}

	mu          sync.Mutex
	pending     map[netip.Prefix]*pendingOp
	syncPending bool
	syncFresh   bool         // sync not yet attempted since requested
	syncGen     uint64       // bumped by every request
	syncWaiters []chan error // told the result of the next attempt
	syncTries   int
	syncNext    time.Time
	applied     uint64
	revoked     uint64
	failures    uint64
	lastErr     string
	lastErrAt   time.Time
	lastOK      time.Time
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) enqueue(op *pendingOp) {
	w.mu.Lock()
	w.pending[op.ban.Prefix] = op
	w.mu.Unlock()
	w.poke()
}

// requestSync asks for a Sync of every active ban; the returned channel
// receives the result of the first attempt that starts after the request.
func (w *worker) requestSync() <-chan error {
	ch := make(chan error, 1)
	w.mu.Lock()
	w.syncPending, w.syncFresh = true, true
	w.syncGen++
	w.syncNext = time.Time{}
	w.syncWaiters = append(w.syncWaiters, ch)
	w.mu.Unlock()
	w.poke()
	return ch
}

func (w *worker) fresh() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.syncFresh {
		return true
	}
	for _, op := range w.pending {
		if op.attempts == 0 {
			return true
		}
	}
	return false
}

func (w *worker) status() ActionStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := ActionStatus{Name: w.act.Name(), Pending: len(w.pending), SyncPending: w.syncPending,
		Applied: w.applied, Revoked: w.revoked, Failures: w.failures,
		LastError: w.lastErr, LastErrorAt: w.lastErrAt, LastOK: w.lastOK}
	for _, op := range w.pending {
		if op.attempts > 0 {
			s.Retrying++
		}
	}
	return s
}

func (w *worker) backoff(attempts int) time.Duration {
	d, limit := w.m.cfg.RetryBase, w.m.cfg.RetryMax
	for i := 1; i < attempts && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (w *worker) loop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := w.runDue(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// runDue runs every call that is due and returns when the next retry is due
// (zero if nothing is pending).
func (w *worker) runDue(ctx context.Context) time.Time {
	name := w.act.Name()
	log := w.m.log
	// Sync first: it covers every active ban.
	w.mu.Lock()
	doSync := w.syncPending && !time.Now().Before(w.syncNext)
	var waiters []chan error
	gen := w.syncGen
	if doSync {
		waiters, w.syncWaiters = w.syncWaiters, nil
	}
	w.mu.Unlock()
	if doSync {
		bans := w.m.index.active(w.m.cfg.Now())
		cctx, cancel := context.WithTimeout(ctx, w.m.cfg.ActionTimeout)
		err := w.act.Sync(cctx, bans)
		cancel()
		if err == nil {
			log.Info("action synced", "action", name, "bans", len(bans))
		}
		w.mu.Lock()
		for _, ch := range waiters {
			ch <- err
		}
		// A request made during the attempt needs an attempt of its own.
		renewed := w.syncGen != gen
		if !renewed {
			w.syncFresh = false
		}
		if err != nil {
			w.syncTries++
			w.syncNext = time.Now().Add(w.backoff(w.syncTries))
			w.noteErr(fmt.Errorf("sync: %w", err))
			log.Warn("action sync failed", "action", name, "err", err, "retry_in", time.Until(w.syncNext).Round(time.Millisecond))
		} else {
			w.syncTries = 0
			w.syncPending = renewed
			w.lastOK = time.Now()
		}
		if renewed {
			w.syncNext = time.Time{}
		}
		w.mu.Unlock()
	}
	if ctx.Err() != nil {
		return time.Time{}
	}

	w.mu.Lock()
	now := time.Now()
	var due []*pendingOp
	for _, op := range w.pending {
		if !now.Before(op.next) {
			due = append(due, op)
		}
	}
	slices.SortFunc(due, func(a, b *pendingOp) int { return a.next.Compare(b.next) })
	w.mu.Unlock()

	for _, op := range due {
		if ctx.Err() != nil {
			return time.Time{}
		}
		cctx, cancel := context.WithTimeout(ctx, w.m.cfg.ActionTimeout)
		var err error
		if op.revoke {
			err = w.act.Revoke(cctx, op.ban.Prefix)
		} else {
			err = w.act.Apply(cctx, op.ban)
		}
		cancel()
		w.mu.Lock()
		current := w.pending[op.ban.Prefix] == op
		if err == nil {
			if op.revoke {
				w.revoked++
			} else {
				w.applied++
			}
			w.lastOK = time.Now()
			if current {
				delete(w.pending, op.ban.Prefix)
			}
		} else {
			op.attempts++
			op.next = time.Now().Add(w.backoff(op.attempts))
			verb := "apply"
			if op.revoke {
				verb = "revoke"
			}
			w.noteErr(fmt.Errorf("%s %s: %w", verb, op.ban.Prefix, err))
			log.Warn("action failed", "action", name, "op", verb, "ip", op.ban.Prefix,
				"attempt", op.attempts, "err", err, "retry_in", time.Until(op.next).Round(time.Millisecond))
		}
		w.mu.Unlock()
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	var next time.Time
	if w.syncPending {
		next = w.syncNext
	}
	for _, op := range w.pending {
		if next.IsZero() || op.next.Before(next) {
			next = op.next
		}
	}
	return next
}

// noteErr records an error; w.mu is held.
func (w *worker) noteErr(err error) {
	w.failures++
	w.lastErr = err.Error()
	w.lastErrAt = time.Now()
}
