package ban

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/nxadm/tail/ratelimiter"

	"github.com/mxguard/mxguard/actions/store"
)

// ErrNotRecorded is wrapped by Decide (and Ban) when a decision was neither
// written to the store nor kept in the persist queue: the store could not
// be read, or refused the write while the queue was full. Nothing was
// applied; the caller should keep its evidence and decide again.
var ErrNotRecorded = errors.New("decision not recorded")

// DefaultPersistQueueMax is the default bound of the persist queue.
const DefaultPersistQueueMax = 100_000

// persistBatch bounds the queued prefixes written under one hold of the
// decision lock (one transaction where the store has PutAll), so that
// draining a long queue does not stall decisions.
const persistBatch = 256

// batchStore is a Store that writes many records in one transaction, all
// or none (the bbolt store): one sync per batch instead of one per ban.
type batchStore interface {
	PutAll(rs []store.Record) error
}

// PersistStatus reports the decisions the store refused to write (a full
// state_dir) and that are kept in memory until it takes writes again.
type PersistStatus struct {
	Pending     int       `json:"pending"`   // prefixes queued, in force in the index and the actions
	Persisted   uint64    `json:"persisted"` // queued records written later
	Failures    uint64    `json:"failures"`  // store writes refused
	Dropped     uint64    `json:"dropped"`   // decisions refused because the queue was full
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// persistQueue holds, per prefix, the newest record the store refused (and
// the prefix's earlier offences refused meanwhile).
// Its fields are guarded by Manager.mu: a queued record is the truth for
// its prefix until written, and decisions read it before the store.
type persistQueue struct {
	max   int
	items map[netip.Prefix]*queuedRecord
	order []netip.Prefix // first queued first; prefixes no longer queued are skipped
	head  int

	attempts int       // failed drain attempts in a row
	next     time.Time // earliest (real) time of the next drain attempt
	wake     chan struct{}
	warn     *ratelimiter.LeakyBucket // error log lines: one a minute
	failing  bool                     // a write failed since the queue was last empty
	st       PersistStatus
}

type queuedRecord struct {
	rec     store.Record
	earlier []store.Record // older offences of the prefix, to be written first (history)
	expired bool           // Expire has revoked rec; it waits only to be recorded
}

// maxEarlier bounds the older offences kept per queued prefix.
const maxEarlier = 8

// pending is what is still to be written for the prefix, oldest first.
func (it *queuedRecord) pending() []store.Record {
	return append(slices.Clip(it.earlier), it.rec)
}

// keep makes the unwritten rest of seq (oldest first) the queued state.
func (it *queuedRecord) keep(rest []store.Record) {
	last := len(rest) - 1
	it.rec, it.earlier = rest[last], slices.Clone(rest[max(0, last-maxEarlier):last])
}

func sameOffence(a, b store.Record) bool { return a.Since.Equal(b.Since) && a.Offence == b.Offence }

func newPersistQueue(max int) *persistQueue {
	return &persistQueue{max: max, items: map[netip.Prefix]*queuedRecord{}, wake: make(chan struct{}, 1),
		warn: ratelimiter.NewLeakyBucket(1, time.Minute)}
}

func (q *persistQueue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *persistQueue) get(p netip.Prefix) (store.Record, bool) {
	if it := q.items[p]; it != nil {
		return it.rec, true
	}
	return store.Record{}, false
}

func (q *persistQueue) remove(p netip.Prefix) bool {
	if q.items[p] == nil {
		return false
	}
	delete(q.items, p)
	if len(q.items) == 0 {
		q.order, q.head = q.order[:0], 0
	}
	return true
}

// oldest returns up to n queued prefixes, first queued first.
func (q *persistQueue) oldest(n int) []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for i := q.head; i < len(q.order) && len(out) < n; i++ {
		p := q.order[i]
		if q.items[p] == nil || seen[p] {
			if len(out) == 0 {
				q.head = i + 1 // nothing live before it
			}
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	// Keep the order slice in proportion to the queue: prefixes written
	// by a decision (the store took that write) leave stale entries.
	if len(q.order)-q.head > 2*len(q.items)+1024 {
		q.compact()
	} else if q.head > 1024 && q.head > len(q.order)/2 {
		q.order = slices.Delete(q.order, 0, q.head)
		q.head = 0
	}
	return out
}

// compact drops the stale entries of the order slice.
func (q *persistQueue) compact() {
	seen := make(map[netip.Prefix]bool, len(q.items))
	live := q.order[:0]
	for _, p := range q.order[q.head:] {
		if q.items[p] != nil && !seen[p] {
			seen[p] = true
			live = append(live, p)
		}
	}
	clear(q.order[len(live):])
	q.order, q.head = live, 0
}

// current is the record decisions start from: a queued one, else the
// stored one. m.mu is held.
func (m *Manager) current(p netip.Prefix) (store.Record, bool, error) {
	if r, ok := m.persist.get(p); ok {
		return r, true, nil
	}
	r, ok, err := m.store.Get(p)
	if err != nil {
		return store.Record{}, false, fmt.Errorf("ban %s: %w: %w", p, ErrNotRecorded, err)
	}
	return r, ok, nil
}

// queuedOffences counts p's queued offences in (cut, t] that are not in
// the stored history times yet. m.mu is held.
func (m *Manager) queuedOffences(p netip.Prefix, times []time.Time, cut, t time.Time) int {
	it := m.persist.items[p]
	if it == nil {
		return 0
	}
	n := 0
	for _, r := range it.pending() {
		if r.Since.After(cut) && !r.Since.After(t) &&
			!slices.ContainsFunc(times, func(at time.Time) bool { return at.Equal(r.Since) }) {
			n++
		}
	}
	return n
}

// writeAll writes seq in order and returns how many were written.
func (m *Manager) writeAll(seq []store.Record) (int, error) {
	for i, r := range seq {
		if err := m.store.Put(r); err != nil {
			return i, err
		}
	}
	return len(seq), nil
}

// record writes rec to the store or, when the store refuses it, keeps it
// in the persist queue: it replaces a queued record of the same offence
// (an extension) and is queued after one of an earlier offence. It
// fails (ErrNotRecorded) only when the queue is full and rec's prefix is
// not in it: the queued bans are kept, the newest decision is refused.
// m.mu is held.
func (m *Manager) record(rec store.Record) error {
	q := m.persist
	seq := []store.Record{rec}
	it := q.items[rec.Prefix]
	if it != nil {
		// A queued extension of the same offence is replaced; a queued
		// earlier offence is written first, so that its history counts.
		seq = append(slices.Clip(it.earlier), rec)
		if !sameOffence(it.rec, rec) {
			seq = append(it.pending(), rec)
		}
	}
	n, err := m.writeAll(seq)
	if it != nil {
		q.st.Persisted += uint64(min(n, len(seq)-1)) // queued ones; rec is last
	}
	if err == nil {
		q.remove(rec.Prefix)
		return nil
	}
	defer m.noteWriteFailure(err) // logged with the queue as it is then
	if it != nil {
		it.keep(seq[n:])
		it.expired = false
		return nil
	}
	if len(q.items) >= q.max {
		q.st.Dropped++
		return fmt.Errorf("ban %s: %w (persist queue full at %d): %w", rec.Prefix, ErrNotRecorded, q.max, err)
	}
	if len(q.items) == 0 {
		q.attempts = 1
		q.next = time.Now().Add(m.persistBackoff(q.attempts))
	}
	q.items[rec.Prefix] = &queuedRecord{rec: rec}
	q.order = append(q.order, rec.Prefix)
	q.poke()
	return nil
}

// noteWriteFailure counts a refused write and logs it at most once a
// minute. m.mu is held.
func (m *Manager) noteWriteFailure(err error) {
	q := m.persist
	q.st.Failures++
	q.st.LastError, q.st.LastErrorAt = err.Error(), time.Now()
	q.failing = true
	if q.warn.Pour(1) {
		m.log.Error("ban store refused a write: bans are applied and kept in memory until it takes writes again",
			"err", err, "pending", len(q.items), "failures", q.st.Failures, "dropped", q.st.Dropped)
	}
}

func (m *Manager) persistBackoff(attempts int) time.Duration {
	d, limit := m.cfg.RetryBase, m.cfg.RetryMax
	for i := 1; i < attempts && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// expireQueued revokes the queued bans whose time is over; they stay
// queued, so that their offence is recorded. m.mu is held.
func (m *Manager) expireQueued(now time.Time) int {
	n := 0
	for p, it := range m.persist.items {
		if it.expired || it.rec.Until.After(now) {
			continue
		}
		it.expired = true
		n++
		m.logDecision("ban expired", "dry-run ban expired", "ip", p, "detector", it.rec.Detector,
			"until", it.rec.Until, "persist_pending", true)
		m.localGone(p, now) // a peer's ban it shadowed comes back
	}
	return n
}

// queuedInForce reports whether p has a queued ban still in force (a
// stored record swept meanwhile must not lift it). m.mu is held.
func (m *Manager) queuedInForce(p netip.Prefix) bool {
	it := m.persist.items[p]
	return it != nil && !it.expired
}

// unqueue drops p's queued ban for an unban. When the store refused the
// delete, the unban still stands if nothing in force is stored for p.
// m.mu is held.
func (m *Manager) unqueue(p netip.Prefix, now time.Time, deleteErr error) (bool, error) {
	if deleteErr != nil {
		if m.persist.items[p] == nil {
			return false, deleteErr
		}
		if r, ok, err := m.store.Get(p); err != nil || ok && r.Until.After(now) {
			return false, deleteErr
		}
		m.log.Warn("unban of a ban not yet written: the store refused the ledger entry", "ip", p, "err", deleteErr)
	}
	return m.persist.remove(p), nil
}

// drainPersist writes queued records, oldest first, in batches, until the
// queue is empty or the store refuses one. It returns when to try again
// (zero: nothing queued).
func (m *Manager) drainPersist(force bool) time.Time {
	for {
		m.mu.Lock()
		q := m.persist
		if len(q.items) == 0 {
			m.mu.Unlock()
			return time.Time{}
		}
		if !force && time.Now().Before(q.next) {
			next := q.next
			m.mu.Unlock()
			return next
		}
		if err := m.writeBatch(q.oldest(persistBatch)); err != nil {
			m.noteWriteFailure(err)
			q.attempts++
			q.next = time.Now().Add(m.persistBackoff(q.attempts))
			next := q.next
			m.mu.Unlock()
			if force {
				return time.Time{}
			}
			return next
		}
		if len(q.items) == 0 {
			q.attempts = 0
			if q.failing {
				q.failing = false
				m.log.Info("ban store takes writes again: queued bans recorded", "persisted", q.st.Persisted,
					"failures", q.st.Failures, "dropped", q.st.Dropped)
			}
		}
		m.mu.Unlock()
	}
}

// writeBatch writes the queued records of ps, oldest first, and unqueues
// what was written. m.mu is held.
func (m *Manager) writeBatch(ps []netip.Prefix) error {
	q := m.persist
	if bs, ok := m.store.(batchStore); ok {
		var seq []store.Record
		for _, p := range ps {
			seq = append(seq, q.items[p].pending()...)
		}
		if err := bs.PutAll(seq); err != nil {
			return err
		}
		for _, p := range ps {
			q.remove(p)
		}
		q.st.Persisted += uint64(len(seq))
		return nil
	}
	for _, p := range ps {
		it := q.items[p]
		seq := it.pending()
		n, err := m.writeAll(seq)
		q.st.Persisted += uint64(n)
		if err != nil {
			it.keep(seq[n:])
			return err
		}
		q.remove(p)
	}
	return nil
}

// persistLoop drains the persist queue with backoff until ctx is done.
func (m *Manager) persistLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Hour
		if next := m.drainPersist(false); !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.persist.wake:
		case <-timer.C:
		}
	}
}

// closePersist makes a last attempt to write the queue and logs what is
// lost with it.
func (m *Manager) closePersist() {
	m.drainPersist(true)
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := len(m.persist.items); n > 0 {
		m.log.Error("ban store still refuses writes at shutdown: bans kept only in memory are lost",
			"lost", n, "err", m.persist.st.LastError)
	}
}

func (m *Manager) persistStatus() PersistStatus {
	s := m.persist.st
	s.Pending = len(m.persist.items)
	return s
}
