package store

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Memory is a block list held in memory with the semantics of Store: the
// same extension rule in Put, offence history (at most 64 times kept),
// ledger and expiry. Replay and dry-run decide over one, so that they make
// exactly the decisions the daemon would without writing the bbolt file.
// Safe for concurrent use.
type Memory struct {
	mu      sync.Mutex
	bans    map[netip.Prefix]Record
	history map[netip.Prefix]History
	ledger  []LedgerEntry // in order of Seq
	seq     uint64
}

// NewMemory returns an empty in-memory block list.
func NewMemory() *Memory {
	return &Memory{bans: map[netip.Prefix]Record{}, history: map[netip.Prefix]History{}}
}

// Seed stores r as it is, with no ledger entry and no offence counted: it
// copies a ban from another store (dry-run starts from the real one).
func (m *Memory) Seed(r Record) {
	r.Lines = cloneLines(r.Lines)
	m.mu.Lock()
	m.bans[r.Prefix] = r
	m.mu.Unlock()
}

// SeedHistory stores h as the offence history of its prefix (see Seed).
func (m *Memory) SeedHistory(h History) {
	h.Times = slices.Clone(h.Times)
	m.mu.Lock()
	m.history[h.Prefix] = h
	m.mu.Unlock()
}

func cloneLines(l []string) []string {
	if len(l) > MaxLines {
		l = l[len(l)-MaxLines:]
	}
	if len(l) == 0 {
		return nil
	}
	return slices.Clone(l)
}

func (m *Memory) appendLedger(event string, at time.Time, r Record) {
	m.seq++
	r.Lines = cloneLines(r.Lines)
	m.ledger = append(m.ledger, LedgerEntry{Seq: m.seq, Event: event, At: at, Record: r})
}

// Put stores r; see Store.Put for when it counts as a new offence.
func (m *Memory) Put(r Record) error {
	if !r.Prefix.IsValid() {
		return fmt.Errorf("memory store: put: invalid prefix")
	}
	r.Lines = cloneLines(r.Lines)
	m.mu.Lock()
	defer m.mu.Unlock()
	old, exists := m.bans[r.Prefix]
	m.bans[r.Prefix] = r
	event := "extend"
	if !exists || !old.Since.Equal(r.Since) || old.Offence != r.Offence {
		event = "ban"
		h := m.history[r.Prefix]
		h.Prefix = r.Prefix
		h.Offences++
		if r.Since.After(h.LastBan) {
			h.LastBan = r.Since
		}
		times := append(slices.Clone(h.Times), r.Since)
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		if len(times) > maxHistoryTimes {
			times = times[len(times)-maxHistoryTimes:]
		}
		h.Times = times
		m.history[r.Prefix] = h
	}
	m.appendLedger(event, r.Since, r)
	return nil
}

// Get returns the record for p, evidence lines included.
func (m *Memory) Get(p netip.Prefix) (Record, bool, error) {
	m.mu.Lock()
	r, ok := m.bans[p]
	m.mu.Unlock()
	r.Lines = slices.Clone(r.Lines)
	return r, ok, nil
}

// Delete removes the ban for p (history kept), records "unban" and
// reports whether there was one.
func (m *Memory) Delete(p netip.Prefix, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.bans[p]
	if !ok {
		return false, nil
	}
	delete(m.bans, p)
	m.appendLedger("unban", now, r)
	return true, nil
}

// expiryOrder sorts records as Store's expiry index does: by untilNanos,
// then by prefix text.
func expiryOrder(a, b Record) int {
	if c := cmp.Compare(untilNanos(a.Until), untilNanos(b.Until)); c != 0 {
		return c
	}
	return cmp.Compare(a.Prefix.String(), b.Prefix.String())
}

// Active returns the records with Until after now, in order of Until,
// without their evidence lines (Get has them).
func (m *Memory) Active(now time.Time) ([]Record, error) {
	var out []Record
	m.mu.Lock()
	for _, r := range m.bans {
		if r.Until.After(now) {
			r.Lines = nil
			out = append(out, r)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, expiryOrder)
	return out, nil
}

// DeleteExpired removes every record with Until at or before now, records
// "expire" for each and returns them in order of Until (history kept).
func (m *Memory) DeleteExpired(now time.Time) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for p, r := range m.bans {
		if !r.Until.After(now) {
			delete(m.bans, p)
			out = append(out, r)
		}
	}
	slices.SortFunc(out, expiryOrder)
	for _, r := range out {
		m.appendLedger("expire", now, r)
	}
	return out, nil
}

// History returns the offence history of p.
func (m *Memory) History(p netip.Prefix) (History, bool, error) {
	m.mu.Lock()
	h, ok := m.history[p]
	m.mu.Unlock()
	h.Times = slices.Clone(h.Times)
	return h, ok, nil
}

// Ledger returns up to limit most recent entries for p, newest first
// (limit <= 0: all).
func (m *Memory) Ledger(p netip.Prefix, limit int) ([]LedgerEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []LedgerEntry
	for i := len(m.ledger) - 1; i >= 0; i-- {
		e := m.ledger[i]
		if e.Record.Prefix != p {
			continue
		}
		e.Record.Lines = slices.Clone(e.Record.Lines)
		out = append(out, e)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, nil
}

// Prune deletes ledger entries dated before `before` (oldest first, up to
// the first one that is not, at most limit; limit <= 0: no limit) and the
// histories whose last ban is before `before` and that have no stored ban
// (at most limit). It returns how many of each it deleted.
func (m *Memory) Prune(before time.Time, limit int) (ledger, history int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ledger < len(m.ledger) && (limit <= 0 || ledger < limit) && m.ledger[ledger].At.Before(before) {
		ledger++
	}
	m.ledger = slices.Delete(m.ledger, 0, ledger)
	// Store walks histories in key order; so does this, for the same limit.
	var dead []netip.Prefix
	for p, h := range m.history {
		if _, banned := m.bans[p]; !banned && h.LastBan.Before(before) {
			dead = append(dead, p)
		}
	}
	slices.SortFunc(dead, func(a, b netip.Prefix) int { return cmp.Compare(a.String(), b.String()) })
	if limit > 0 && len(dead) > limit {
		dead = dead[:limit]
	}
	for _, p := range dead {
		delete(m.history, p)
	}
	return ledger, len(dead), nil
}
