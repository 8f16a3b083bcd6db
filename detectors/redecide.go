package detectors

import (
	"net/netip"
	"slices"
)

// owedKey names one detector's window of one key (address or prefix).
type owedKey struct {
	key netip.Prefix
	det detID
}

// owed is a decision taken back with Redecide, until it is made again.
type owed struct {
	evidence int
	reason   string
	lines    []string
	until    int64 // log time; the debt lapses one window after the decision
}

// Redecide takes back a decision the caller could not act on (the ban
// manager neither recorded nor queued it): the detector's quiet period for
// that client ends, and its next evidence within one window decides again
// at once, with the evidence of the decision taken back. Without further
// evidence nothing is decided: the caller keeps the log position instead.
func (e *Engine) Redecide(d Decision) {
	if d.Warn {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	id, tab, ok := e.windowOf(d)
	if !ok {
		return
	}
	if s := tab.lookup(d.Prefix); s != nil {
		if c := s.find(id); c != nil {
			c.muted = 0
		}
		if id == dScore && s.score != nil {
			s.score.muted = 0
		}
	}
	t := e.now
	if !d.Time.IsZero() {
		t = d.Time.UnixNano()
	}
	if e.owed == nil {
		e.owed = map[owedKey]owed{}
	}
	if len(e.owed) >= e.cfg.MaxClients {
		e.dropLapsedDebts()
		if len(e.owed) >= e.cfg.MaxClients {
			return // bounded: the mute is lifted all the same
		}
	}
	e.owed[owedKey{d.Prefix, id}] = owed{evidence: d.Evidence, reason: d.Reason,
		lines: slices.Clone(d.Lines), until: t + e.rules[id].window}
}

// windowOf finds the detector and table a decision came from.
func (e *Engine) windowOf(d Decision) (detID, *table, bool) {
	full := d.Prefix.Bits() == d.Prefix.Addr().BitLen()
	for id := range nDet {
		if e.rules[id].name != d.Detector {
			continue
		}
		switch {
		case id == dEscalation:
			return id, e.prefixes, true
		case (id == dSASL || id == dDictionary) && !full:
			continue // the per-prefix window
		case id == dSASLPrefix || id == dDictPrefix:
			return id, e.prefixes, true
		}
		return id, e.clients, true
	}
	return 0, nil, false
}

func (e *Engine) dropLapsedDebts() {
	for k, o := range e.owed {
		if e.now >= o.until {
			delete(e.owed, k)
		}
	}
}

// owes reports whether d owes key a decision at t (e.mu is held).
func (e *Engine) owes(key netip.Prefix, d detID, t int64) bool {
	if len(e.owed) == 0 {
		return false
	}
	k := owedKey{key, d}
	o, ok := e.owed[k]
	if ok && t >= o.until {
		delete(e.owed, k)
		return false
	}
	return ok
}

// payDebt adds a taken-back decision's evidence to dec, the one made in
// its place at t (e.mu is held).
func (e *Engine) payDebt(key netip.Prefix, d detID, t int64, dec *Decision) {
	if len(e.owed) == 0 {
		return
	}
	k := owedKey{key, d}
	o, ok := e.owed[k]
	if !ok {
		return
	}
	delete(e.owed, k)
	if t >= o.until {
		return
	}
	if dec.Evidence < e.rules[d].threshold {
		dec.Reason = o.reason // the new window alone would not have decided
	}
	dec.Evidence += o.evidence
	lines := append(slices.Clip(o.lines), dec.Lines...)
	if len(lines) > e.keep {
		lines = lines[len(lines)-e.keep:]
	}
	dec.Lines = lines
}
