// Package detectors turns logparse Events into ban Decisions.
//
// One Engine holds per-client sliding windows for all detectors. It is fed
// synchronously with Observe, takes its time only from Event.Time (so a
// replay of an old log decides exactly as the live tail did), never touches
// the network, files or the firewall, and keeps bounded memory: windows
// hold at most threshold entries, idle clients expire, and the number of
// tracked clients is capped (least recently seen dropped first).
//
// Detectors (config key = Decision.Detector):
//
//	dictionary       ≥5 distinct unknown recipients within 10m
//	error_burst      ≥6 abuse events within 5m; "too many errors" decides at once
//	pipelining       improper command pipelining: the first decides
//	pregreet         PREGREET, NON-SMTP COMMAND, BARE NEWLINE, COMMAND … LIMIT: the first decides
//	sasl_bruteforce  ≥5 SASL failures within 10m (optionally per /24 or /64 too)
//	relay_probe      ≥3 "Relay access denied" within 1h
//	dnsbl            postscreen DNSBL rank ≥3, or ≥1 smtpd "blocked using" reject within 1h
//	bad_helo         ≥2 HELO rejects within 1h
//
// Only events with Abuse set count. Forgiveness: a successful AUTH of the
// same address (KindSASLLogin) resets its sasl_bruteforce, error_burst,
// dictionary and relay_probe windows. An accepted message without AUTH
// (KindReceived) only softens error_burst: it removes the oldest error from
// the window, at most threshold/2 times within one window (sliding), so
// threshold + threshold/2 errors within a window decide however much mail is
// accepted in between. Accepted mail never touches sasl_bruteforce (a
// guesser can always deliver to postmaster@), dictionary or relay_probe (a
// harvester also gets messages accepted for the addresses it found).
//
// error_burst counts every abuse event except disconnect statistics (they
// repeat failures already counted), postscreen DNSBL ranks (dnsbl's job) and
// lost connection / timeout after CONNECT (health checks and port scans).
// After a decision a detector is quiet for that client for one window
// (dedupe; Redecide takes a decision back); the ban manager handles repeat
// offenders. Feed events in log
// order: idle clients are expired against the latest event time seen.
package detectors

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

type detID uint8

const (
	dDictionary detID = iota
	dErrorBurst
	dPipelining
	dPregreet
	dSASL
	dRelay
	dDNSBL
	dBadHelo
	dSASLPrefix // sasl_bruteforce per prefix, in the prefix table
	dEscalation // prefix escalation, in the prefix table
	nDet
)

// rt is a detector's rule at run time.
type rt struct {
	name      string
	enabled   bool
	threshold int
	window    int64 // nanoseconds
	win       Duration
	warn      bool
	distinct  bool // count distinct hashes, not events
}

// Engine runs every detector over a stream of events. It is safe for
// concurrent use (one mutex), so the log tailer and the inline guard may
// share one Engine.
type Engine struct {
	mu        sync.Mutex
	log       *slog.Logger
	cfg       Config
	rules     [nDet]rt
	dnsblRank int
	keep      int // evidence lines per decision
	clients   *table
	prefixes  *table
	now       int64 // latest event time seen
	events    uint64
	decisions [nDet]uint64
	warnedCap bool
	owed      map[owedKey]owed // decisions taken back by Redecide
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	Events    uint64            // events observed
	Decisions map[string]uint64 // decisions made, by Decision.Detector
	Clients   int               // addresses tracked now
	Prefixes  int               // prefixes tracked now (per-prefix SASL, escalation)
	Evicted   uint64            // states dropped because of max_clients
	Expired   uint64            // states dropped because every window passed
}

// New validates cfg and returns an Engine. A nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("detectors: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{log: logger, cfg: cfg, keep: cfg.EvidenceLines, dnsblRank: cfg.DNSBL.Threshold}
	mk := func(name string, r Rule) rt {
		return rt{name: name, enabled: r.Enabled, threshold: r.Threshold, window: int64(r.Window),
			win: r.Window, warn: r.Mode == ModeWarn}
	}
	e.rules[dDictionary] = mk(Dictionary, cfg.Dictionary)
	e.rules[dDictionary].distinct = true
	e.rules[dErrorBurst] = mk(ErrorBurst, cfg.ErrorBurst)
	e.rules[dPipelining] = mk(Pipelining, cfg.Pipelining)
	e.rules[dPregreet] = mk(Pregreet, cfg.Pregreet)
	e.rules[dSASL] = mk(SASLBruteforce, cfg.SASLBruteforce.Rule)
	e.rules[dRelay] = mk(RelayProbe, cfg.RelayProbe)
	e.rules[dDNSBL] = mk(DNSBL, cfg.DNSBL.Rule)
	e.rules[dDNSBL].threshold = cfg.DNSBL.Rejects
	e.rules[dBadHelo] = mk(BadHelo, cfg.BadHelo)
	e.rules[dSASLPrefix] = mk(SASLBruteforce, cfg.SASLBruteforce.Rule)
	e.rules[dSASLPrefix].enabled = cfg.SASLBruteforce.Enabled && cfg.SASLBruteforce.PerPrefix
	e.rules[dSASLPrefix].threshold = cfg.SASLBruteforce.PrefixThreshold
	pe := cfg.PrefixEscalation
	e.rules[dEscalation] = rt{name: PrefixEscalation, enabled: pe.Enabled, threshold: pe.Count,
		window: int64(pe.Window), win: pe.Window, warn: pe.Mode == ModeWarn, distinct: true}

	var ch, ph int64 = 1, 1
	for d := range dSASLPrefix {
		if r := e.rules[d]; r.enabled && r.window > ch {
			ch = r.window
		}
	}
	for _, d := range []detID{dSASLPrefix, dEscalation} {
		if r := e.rules[d]; r.enabled && r.window > ph {
			ph = r.window
		}
	}
	e.clients = newTable(cfg.MaxClients, ch)
	e.prefixes = newTable(cfg.MaxClients, ph)
	return e, nil
}

// Config returns the configuration the engine runs with.
func (e *Engine) Config() Config { return e.cfg }

// LongestWindow is the longest window of an enabled detector (prefix
// escalation included): how far back an event can still count.
func (e *Engine) LongestWindow() time.Duration {
	var w int64
	for _, r := range e.rules {
		if r.enabled {
			w = max(w, r.window)
		}
	}
	return time.Duration(w)
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Stats{
		Events: e.events, Decisions: make(map[string]uint64),
		Clients: len(e.clients.m), Prefixes: len(e.prefixes.m),
		Evicted: e.clients.evicted + e.prefixes.evicted,
		Expired: e.clients.expired + e.prefixes.expired,
	}
	for _, n := range Names() {
		st.Decisions[n] = 0
	}
	st.Decisions[PrefixEscalation] = 0
	for d, n := range e.decisions {
		st.Decisions[e.rules[d].name] += n
	}
	return st
}

// obs is one event being observed.
type obs struct {
	ev   event.Event
	t    int64
	addr netip.Addr
	line string
	kept bool
	keep int
}

// raw returns the event's line, cloned once (Event strings may alias a
// reused buffer), or "" when no evidence is kept.
func (o *obs) raw() string {
	if o.keep == 0 {
		return ""
	}
	if !o.kept {
		raw := o.ev.Raw
		if len(raw) > maxEvidenceLine {
			raw = raw[:maxEvidenceLine] // bounded memory per tracked client
		}
		o.line, o.kept = strings.Clone(raw), true
	}
	return o.line
}

// maxEvidenceLine bounds each kept evidence line: Postfix lines are a few
// hundred bytes, a log line can be 64 KiB.
const maxEvidenceLine = 512

// Observe feeds one event to every detector and returns the decisions it
// triggers (usually none; nil then). Events without a valid client are
// ignored. An event with a zero Time is taken to happen at the latest
// time seen so far.
func (e *Engine) Observe(ev event.Event) []Decision {
	if !ev.Client.IsValid() {
		return nil
	}
	addr := ev.Client.Unmap()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events++
	t := e.now
	if !ev.Time.IsZero() {
		t = ev.Time.UnixNano()
	}
	if t > e.now {
		e.now = t
	}
	e.clients.expire(e.now)
	e.prefixes.expire(e.now)
	o := &obs{ev: ev, t: t, addr: addr, keep: e.keep}
	key := netip.PrefixFrom(addr, addr.BitLen())

	var out []Decision
	switch ev.Kind {
	case event.KindSASLLogin:
		e.forgive(key, dSASL, dErrorBurst, dDictionary, dRelay)
		return nil
	case event.KindReceived:
		e.soften(key, t)
		return nil
	case event.KindDisconnect:
		// The statistics repeat failures already logged one by one; only
		// failed AUTH may count, and only when configured.
		if e.cfg.SASLBruteforce.CountDisconnectAuth && e.rules[dSASL].enabled {
			if n := authFailures(ev.Detail); n > 0 {
				out = e.sasl(o, key, n, out)
			}
		}
		return e.escalate(o, out)
	}
	if !ev.Abuse {
		return nil
	}
	s := e.clients.get(key, t)
	if e.clients.evicted > 0 && !e.warnedCap {
		e.warnedCap = true
		e.log.Warn("detectors: max_clients reached, dropping least recently seen clients", "max_clients", e.cfg.MaxClients)
	}

	switch ev.Kind {
	case event.KindReject:
		switch r := ev.Reason; {
		case r == event.ReasonUnknownRecipient:
			out = e.bump(s, dDictionary, o, hashLower(ev.To), 1, out)
		case r == event.ReasonRelayDenied:
			out = e.bump(s, dRelay, o, 0, 1, out)
		case r.IsHelo():
			out = e.bump(s, dBadHelo, o, 0, 1, out)
		case r == event.ReasonDNSBL:
			out = e.bump(s, dDNSBL, o, 0, 1, out)
		case r == event.ReasonPipelining:
			out = e.bump(s, dPipelining, o, 0, 1, out)
		}
	case event.KindPipelining:
		out = e.bump(s, dPipelining, o, 0, 1, out)
	case event.KindPregreet, event.KindNonSMTP, event.KindBareNewline, event.KindCommandLimit:
		out = e.bump(s, dPregreet, o, 0, 1, out)
	case event.KindSASLFail:
		out = e.sasl(o, key, 1, out)
	case event.KindDNSBL:
		if ev.Count >= e.dnsblRank {
			out = e.now1(s, dDNSBL, o, out)
		}
	}

	switch ev.Kind {
	case event.KindTooManyErrors:
		out = e.now1(s, dErrorBurst, o, out)
	case event.KindDNSBL:
		// Its own detector; a listed but busy legitimate sender must not
		// reach error_burst by connecting often.
	case event.KindLostConnection, event.KindTimeout:
		// A bare connect and close (health checks, port scans) is not an
		// SMTP error.
		if ev.Stage != "CONNECT" {
			out = e.bump(s, dErrorBurst, o, 0, 1, out)
		}
	default:
		out = e.bump(s, dErrorBurst, o, 0, 1, out)
	}
	return e.escalate(o, out)
}

// forgive resets the windows ds of key, if it is tracked. Mutes stay.
func (e *Engine) forgive(key netip.Prefix, ds ...detID) {
	s := e.clients.lookup(key)
	if s == nil {
		return
	}
	for _, d := range ds {
		if c := s.find(d); c != nil {
			c.reset()
		}
	}
}

// soften removes the oldest error from key's error_burst window for an
// accepted message, unless threshold/2 errors were already removed within
// the last window: one accepted message per error must not hide an error
// burst, while a busy sender's few errors are still taken back.
func (e *Engine) soften(key netip.Prefix, t int64) {
	r := &e.rules[dErrorBurst]
	s := e.clients.lookup(key)
	if s == nil || !r.enabled {
		return
	}
	c := s.find(dErrorBurst)
	if c == nil {
		return
	}
	c.expire(t, r.window)
	if len(c.ev) == 0 || !c.spendForgiveness(t, r.window, r.threshold/2) {
		return
	}
	c.dropOldest()
}

// sasl counts n SASL failures for the address and, with per_prefix, for
// its prefix.
func (e *Engine) sasl(o *obs, key netip.Prefix, n int, out []Decision) []Decision {
	if !e.rules[dSASL].enabled {
		return out
	}
	out = e.bump(e.clients.get(key, o.t), dSASL, o, 0, n, out)
	if e.rules[dSASLPrefix].enabled {
		out = e.bump(e.prefixes.get(e.prefixOf(o.addr), o.t), dSASLPrefix, o, 0, n, out)
	}
	return out
}

func (e *Engine) prefixOf(a netip.Addr) netip.Prefix {
	bits := e.cfg.PrefixEscalation.V6Bits
	if a.Is4() {
		bits = e.cfg.PrefixEscalation.V4Bits
	}
	p, _ := a.Prefix(bits) // bits are validated
	return p
}

// bump counts n events (hash h) for detector d of state s and decides when
// the window holds the threshold.
func (e *Engine) bump(s *state, d detID, o *obs, h uint64, n int, out []Decision) []Decision {
	r := &e.rules[d]
	if !r.enabled {
		return out
	}
	c := s.counter(d)
	if o.t < c.muted {
		return out
	}
	c.expire(o.t, r.window)
	line := o.raw()
	for range n {
		c.add(entry{t: o.t, h: h, line: line}, r.threshold, e.keep, r.distinct)
		line = "" // one line of evidence per log line
	}
	if len(c.ev) < r.threshold && !e.owes(s.key, d, o.t) {
		return out
	}
	return append(out, e.decide(s, c, d, o))
}

// now1 decides at once for detector d (too many errors, DNSBL rank).
func (e *Engine) now1(s *state, d detID, o *obs, out []Decision) []Decision {
	r := &e.rules[d]
	if !r.enabled {
		return out
	}
	c := s.counter(d)
	if o.t < c.muted {
		return out
	}
	c.expire(o.t, r.window)
	c.add(entry{t: o.t, line: o.raw()}, max(r.threshold, 1), e.keep, false)
	return append(out, e.decide(s, c, d, o))
}

// decide builds the Decision from c, then resets c and mutes d for one
// window.
func (e *Engine) decide(s *state, c *counter, d detID, o *obs) Decision {
	r := &e.rules[d]
	var lines []string
	for i := range c.ev {
		if c.ev[i].line != "" {
			lines = append(lines, c.ev[i].line)
		}
	}
	if len(lines) > e.keep {
		lines = lines[len(lines)-e.keep:]
	}
	dec := Decision{
		Prefix:   s.key,
		Detector: r.name,
		Reason:   e.reason(d, len(c.ev), s.key, &o.ev),
		Evidence: len(c.ev),
		Time:     o.ev.Time,
		Lines:    lines,
		Warn:     r.warn,
	}
	e.payDebt(s.key, d, o.t, &dec)
	c.reset()
	c.muted = o.t + r.window
	e.decisions[d]++
	e.log.Debug("detectors: decision", "prefix", dec.Prefix.String(), "detector", dec.Detector,
		"reason", dec.Reason, "count", dec.Evidence, "warn", dec.Warn)
	return dec
}

func (e *Engine) reason(d detID, n int, key netip.Prefix, ev *event.Event) string {
	win := e.rules[d].win
	switch d {
	case dDictionary:
		return fmt.Sprintf("%d unknown %s within %s", n, plural(n, "recipient", "recipients"), win)
	case dErrorBurst:
		if ev.Kind == event.KindTooManyErrors {
			return "too many errors" + after(ev.Stage)
		}
		return fmt.Sprintf("%d %s within %s", n, plural(n, "error", "errors"), win)
	case dPipelining:
		return "improper command pipelining" + after(ev.Stage)
	case dPregreet:
		switch ev.Kind {
		case event.KindPregreet:
			return "pregreet"
		case event.KindNonSMTP:
			return "non-SMTP command"
		case event.KindBareNewline:
			return "bare newline"
		default:
			return "command limit exceeded"
		}
	case dSASL:
		return fmt.Sprintf("%d SASL authentication %s within %s", n, plural(n, "failure", "failures"), win)
	case dSASLPrefix:
		return fmt.Sprintf("%d SASL authentication %s from %s within %s", n, plural(n, "failure", "failures"), key, win)
	case dRelay:
		return fmt.Sprintf("%d relay %s within %s", n, plural(n, "attempt", "attempts"), win)
	case dDNSBL:
		if ev.Kind == event.KindDNSBL {
			return fmt.Sprintf("postscreen DNSBL rank %d", ev.Count)
		}
		if n == 1 && ev.Detail != "" {
			return "listed in " + ev.Detail
		}
		return fmt.Sprintf("%d DNSBL %s within %s", n, plural(n, "reject", "rejects"), win)
	case dBadHelo:
		return fmt.Sprintf("%d HELO %s within %s", n, plural(n, "reject", "rejects"), win)
	case dEscalation:
		return fmt.Sprintf("%d addresses of %s decided within %s", n, key, win)
	}
	return e.rules[d].name
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func after(stage string) string {
	if stage == "" {
		return ""
	}
	return " after " + stage
}

// escalate records the ban-mode address decisions in out for their
// prefixes and appends a prefix decision when one has enough of them.
func (e *Engine) escalate(o *obs, out []Decision) []Decision {
	if !e.rules[dEscalation].enabled {
		return out
	}
	for i, n := 0, len(out); i < n; i++ {
		d := out[i]
		if d.Warn || d.Prefix.Bits() != d.Prefix.Addr().BitLen() {
			continue
		}
		a := d.Prefix.Addr()
		ps := e.prefixes.get(e.prefixOf(a), o.t)
		out = e.bump(ps, dEscalation, o, hashAddr(a), 1, out)
	}
	return out
}

// authFailures reads failed AUTH commands from disconnect statistics such
// as "ehlo=1 auth=0/3 quit=1 commands=2/5": 3 here. "auth=1" is none.
func authFailures(s string) int {
	i := strings.Index(s, "auth=")
	for i > 0 && s[i-1] != ' ' {
		j := strings.Index(s[i+1:], "auth=")
		if j < 0 {
			return 0
		}
		i += 1 + j
	}
	if i < 0 {
		return 0
	}
	s = s[i+len("auth="):]
	if j := strings.IndexByte(s, ' '); j >= 0 {
		s = s[:j]
	}
	ok, total, found := strings.Cut(s, "/")
	if !found {
		return 0
	}
	a, b := atoi(ok), atoi(total)
	if a < 0 || b < 0 || b <= a {
		return 0
	}
	return b - a
}

func atoi(s string) int {
	if s == "" || len(s) > 6 {
		return -1
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashLower is FNV-1a of s with ASCII letters lowered, so that
// Bob@example.org and bob@example.org are one recipient. No allocation.
func hashLower(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h | 1 // never 0
}

func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h | 1
}
