// Package detectors turns logparse Events into ban Decisions.
//
// One Engine holds per-client sliding windows for all detectors. It is fed
// synchronously with Observe, takes its time only from Event.Time (so a
// replay of an old log decides exactly as the live tail did), never touches
// the network, files or the firewall, and keeps bounded memory: windows
// hold at most threshold entries, idle clients expire (the few that hold a
// long window wait in an idle list until it has passed), and the number of
// tracked clients is capped (of the least recently seen, the one nearest to
// no decision is dropped first, so address churn does not push out the
// long windows). Logins, accepted mail and hostname warnings create no
// state: a fixed table remembers them.
//
// Detectors (config key = Decision.Detector):
//
//	dictionary       ≥5 distinct unknown recipients within 10m; per /24 (/64): ≥15 from ≥3 addresses within 1h
//	error_burst      ≥6 abuse events within 5m; "too many errors" decides at once
//	pipelining       improper command pipelining: the first decides
//	pregreet         PREGREET, NON-SMTP COMMAND, BARE NEWLINE, COMMAND … LIMIT: the first decides
//	sasl_bruteforce  ≥5 SASL failures within 10m, or ≥8 within 6h (optionally per /24 or /64 too)
//	relay_probe      ≥3 "Relay access denied" within 1h
//	dnsbl            postscreen DNSBL rank ≥3, or ≥1 smtpd "blocked using" reject within 1h
//	bad_helo         ≥2 HELO rejects within 1h
//	flood            ≥8 connections ended before MAIL (lost/timeout after HELO/EHLO, STARTTLS,
//	                 timeout after CONNECT), postscreen HANGUPs, failed TLS handshakes, anvil
//	                 connection limits within 1m; ≥30 bare connect-and-close drops within 1m
//	admin_reject     ≥3 permanent refusals by the access lists (client_access, postscreen denylist) within 1h
//	content_reject   ≥3 messages permanently refused by header/body checks or milters within 1h
//	sasl_spray       ≥4 distinct SASL usernames failing within 1h
//	score            weighted weak signals, halving every 30m, ≥10 points
//
// Only events with Abuse set count, except where a detector says otherwise
// (flood counts drops after CONNECT; score weighs hostname warnings and
// disconnect statistics). Forgiveness: a successful AUTH of the same
// address (KindSASLLogin) resets its sasl_bruteforce, error_burst,
// dictionary, relay_probe, admin_reject, content_reject and score windows,
// takes its own username (and its local part) out of sasl_spray's and
// exempts the address from admin_reject and content_reject for a window.
// An accepted message without AUTH (KindReceived) only softens error_burst:
// it removes the oldest error from the window, at most threshold/2 times
// within one window (sliding), so threshold + threshold/2 errors within a
// window decide however much mail is accepted in between. Accepted mail
// never touches sasl_bruteforce (a guesser can always deliver to
// postmaster@), dictionary or relay_probe (a harvester also gets messages
// accepted for the addresses it found); it only keeps a prefix that sends
// as much accepted mail as it gets unknown recipients from being decided
// as a whole.
//
// Accepted mail also takes one failed TLS handshake out of flood's window
// (an MTA falling back to plain text), and flood does not decide for a
// client with mail accepted within two of its windows until its window
// has seen three times the threshold (a relay restart drops about its
// concurrency; a flood keeps going).
//
// error_burst counts every abuse event except disconnect statistics (they
// repeat failures already counted), postscreen DNSBL ranks (dnsbl's job),
// flood's events while flood is on (counting them twice would decide a
// retrying MTA twice as fast), TLS errors and rate limits, and lost
// connection / timeout after CONNECT (health checks and port scans).
// After a decision a detector is quiet for that client for one window
// (dedupe; Redecide takes a decision back); the ban manager handles repeat
// offenders. Feed events in log
// order: idle clients are expired against the latest event time seen.
package detectors

import (
	"fmt"
	"log/slog"
	"math"
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
	dFlood
	dAdminReject
	dContentReject
	dSASLSpray
	dConnectDrops    // flood's bare connect-and-close drops, at their own bar
	dScore           // no counter: the client's scoreState
	dSASLPrefix      // sasl_bruteforce per prefix, in the prefix table
	dDictPrefix      // dictionary per prefix: distinct unknown recipients
	dDictPrefixAddrs // dictionary per prefix: distinct addresses (no decisions of its own)
	dPrefixAccepted  // dictionary per prefix: accepted messages (no decisions of its own)
	dEscalation      // prefix escalation, in the prefix table
	nDet
)

// firstPrefixDet is the first detector whose windows live in the prefix
// table; the ones before it are per address.
const firstPrefixDet = dSASLPrefix

// rt is a detector's rule at run time.
type rt struct {
	name      string
	enabled   bool
	threshold int
	window    int64 // nanoseconds
	win       Duration
	warn      bool
	distinct  bool // count distinct hashes, not events
	// A second, longer window: longThreshold events within longWindow
	// also decide (sasl_bruteforce's low and slow guessing). 0: none.
	longThreshold int
	longWindow    int64
	longWin       Duration
	span          int64 // how long an event can still matter: max(window, longWindow, …)
}

// limit is how many entries a window of r holds at most.
func (r *rt) limit() int { return max(r.threshold, r.longThreshold) }

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
	weights   [nScore]float32  // score weight per class
	classCap  float32          // a class adds at most classCap × its weight
	halfLife  int64
	prefAddrs int // dictionary.prefix_addresses
	spans     [nDet]int64
	bars      [nDet]bar
	recent    recentGood // logins, accepted mail and hostname warnings of clients not tracked for them
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	Events    uint64            // events observed
	Decisions map[string]uint64 // decisions made, by Decision.Detector
	Clients   int               // addresses tracked now
	Prefixes  int               // prefixes tracked now (per-prefix dictionary and SASL, escalation)
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
	e.rules[dDictionary] = mk(Dictionary, cfg.Dictionary.Rule)
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
	if sb := cfg.SASLBruteforce; sb.LongActive() {
		r := &e.rules[dSASL]
		r.longThreshold, r.longWindow, r.longWin = sb.LongThreshold, int64(sb.LongWindow), sb.LongWindow
	}
	e.rules[dFlood] = mk(Flood, cfg.Flood.Rule)
	e.rules[dConnectDrops] = mk(Flood, cfg.Flood.Rule)
	e.rules[dConnectDrops].threshold = cfg.Flood.ConnectDropsThreshold
	e.rules[dAdminReject] = mk(AdminReject, cfg.AdminReject)
	e.rules[dContentReject] = mk(ContentReject, cfg.ContentReject)
	e.rules[dSASLSpray] = mk(SASLSpray, cfg.SASLSpray)
	e.rules[dSASLSpray].distinct = true
	sc := cfg.Score
	// The score's "window" is its quiet period after a decision; its
	// state matters for four half-lives (the score has fallen to 1/16).
	e.rules[dScore] = rt{name: Score, enabled: sc.Enabled, window: int64(sc.HalfLife), win: sc.HalfLife,
		warn: sc.Mode == ModeWarn, span: 4 * int64(sc.HalfLife), threshold: math.MaxInt32}
	for i, w := range sc.Weights.list() {
		e.weights[i] = float32(w)
	}
	e.classCap, e.halfLife = float32(sc.ClassCap), int64(sc.HalfLife)
	dict := cfg.Dictionary
	e.rules[dDictPrefix] = rt{name: Dictionary, enabled: dict.Enabled && dict.PerPrefix, threshold: dict.PrefixThreshold,
		window: int64(dict.PrefixWindow), win: dict.PrefixWindow, warn: dict.Mode == ModeWarn, distinct: true}
	e.rules[dDictPrefixAddrs] = e.rules[dDictPrefix]
	e.rules[dDictPrefixAddrs].threshold = dict.PrefixAddresses
	e.rules[dPrefixAccepted] = e.rules[dDictPrefix]
	e.rules[dPrefixAccepted].distinct = false
	e.prefAddrs = dict.PrefixAddresses
	pe := cfg.PrefixEscalation
	e.rules[dEscalation] = rt{name: PrefixEscalation, enabled: pe.Enabled, threshold: pe.Count,
		window: int64(pe.Window), win: pe.Window, warn: pe.Mode == ModeWarn, distinct: true}

	// A table drops a state idle for its longest ordinary window; only
	// states holding a longer one (sasl_bruteforce's long window, a score)
	// are kept until that has passed.
	var ch, ph int64 = 1, 1
	for d := range nDet {
		r := &e.rules[d]
		r.span = max(r.span, r.window, r.longWindow)
		e.spans[d] = r.span
		if !r.enabled {
			continue
		}
		if d < firstPrefixDet {
			ch = max(ch, r.window)
		} else {
			ph = max(ph, r.span)
		}
	}
	for d := range nDet {
		if r := &e.rules[d]; d != dScore {
			e.bars[d] = bar{window: r.window, threshold: r.threshold, longWindow: r.longWindow, longThreshold: r.longThreshold}
		}
	}
	e.clients = newTable(cfg.MaxClients, ch, &e.spans, &e.bars, e.rules[dScore].span, e.halfLife, sc.Threshold)
	e.prefixes = newTable(cfg.MaxClients, ph, &e.spans, &e.bars, 0, 0, 0)
	e.recent = newRecentGood(cfg.MaxClients, signSpans{
		login:    max(e.rules[dAdminReject].window, e.rules[dContentReject].window),
		accepted: 2 * e.rules[dFlood].window,
		mismatch: e.rules[dScore].span,
	})
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
			w = max(w, r.span)
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
		e.forgive(key, dSASL, dErrorBurst, dDictionary, dRelay, dScore, dAdminReject, dContentReject)
		e.forgiveUser(key, addr, t, ev.Detail)
		return nil
	case event.KindReceived:
		e.soften(key, t)
		e.softenFlood(key)
		if g := e.recent.slot(addr, t, false); g != nil {
			g.accepted = t
		}
		e.prefixAccepted(addr, t)
		return nil
	}
	var s *state
	if e.rules[dFlood].enabled && floodEvent(&ev) {
		if ev.Kind == event.KindTLSError && !ev.Abuse {
			// a TLS library problem only folds into its handshake's
			// entry: it needs no state of its own
			if st := e.clients.lookup(key); st != nil {
				out = e.flood(st, o, out)
			}
		} else {
			s = e.state(key, t)
			out = e.flood(s, o, out)
		}
	}
	if e.rules[dScore].enabled {
		if c, n := scoreClassOf(&ev, e.dnsblRank); c == scHostnameMismatch && e.weights[c] > 0 {
			// Common for honest senders and never enough alone: kept
			// aside (no state) until a scored event of another class.
			if st := e.clients.lookup(key); st != nil && st.score != nil {
				out = e.score(st, c, n, o, out)
			} else {
				if g := e.recent.slot(addr, t, false); g != nil {
					g.mismatch = t
				}
			}
		} else if c != scNone && e.weights[c] > 0 {
			if s == nil {
				s = e.state(key, t)
			}
			out = e.score(s, c, n, o, out)
		}
	}
	if ev.Kind == event.KindDisconnect {
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
		return e.escalate(o, out)
	}
	if s == nil {
		s = e.state(key, t)
	}

	switch ev.Kind {
	case event.KindReject:
		switch r := ev.Reason; {
		case r == event.ReasonUnknownRecipient:
			h := hashLower(ev.To)
			out = e.bump(s, dDictionary, o, h, 1, out)
			out = e.dictPrefix(o, h, out)
		case r == event.ReasonRelayDenied:
			out = e.bump(s, dRelay, o, 0, 1, out)
		case r.IsHelo():
			out = e.bump(s, dBadHelo, o, 0, 1, out)
		case r == event.ReasonDNSBL:
			out = e.bump(s, dDNSBL, o, 0, 1, out)
		case r == event.ReasonPipelining:
			out = e.bump(s, dPipelining, o, 0, 1, out)
		case r == event.ReasonClientAccess && permanent(&ev):
			// a temporary one is a policy service's or greylister's
			// "try again", not the admin's access list
			if !e.loggedIn(addr, dAdminReject, t) {
				out = e.bump(s, dAdminReject, o, 0, 1, out)
			}
		case r == event.ReasonMessageRejected:
			if structuralClient(&ev) && !e.loggedIn(addr, dContentReject, t) {
				out = e.bump(s, dContentReject, o, 0, 1, out)
			}
		}
	case event.KindPSDenylisted:
		out = e.bump(s, dAdminReject, o, 0, 1, out)
	case event.KindPipelining:
		out = e.bump(s, dPipelining, o, 0, 1, out)
	case event.KindPregreet, event.KindNonSMTP, event.KindBareNewline, event.KindCommandLimit:
		out = e.bump(s, dPregreet, o, 0, 1, out)
	case event.KindSASLFail:
		out = e.sasl(o, key, 1, out)
		if ev.Detail != "" {
			out = e.bump(s, dSASLSpray, o, hashLower(ev.Detail), 1, out)
		}
	case event.KindDNSBL:
		if ev.Count >= e.dnsblRank {
			out = e.now1(s, dDNSBL, o, out)
		}
	}

	switch {
	case e.rules[dFlood].enabled && floodEvent(&ev):
		// flood's; counting it here too would decide a retrying MTA
		// twice as fast
		return e.escalate(o, out)
	}
	switch ev.Kind {
	case event.KindTooManyErrors:
		out = e.now1(s, dErrorBurst, o, out)
	case event.KindDNSBL:
		// Its own detector; a listed but busy legitimate sender must not
		// reach error_burst by connecting often.
	case event.KindTLSError, event.KindRateLimit:
		// flood's: a connection refused or failed before SMTP began is
		// not an SMTP error, and a busy relay meets rate limits.
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

// state returns key's state, creating it, and warns once when the table
// starts dropping clients.
func (e *Engine) state(key netip.Prefix, t int64) *state {
	s := e.clients.get(key, t)
	if e.clients.evicted > 0 && !e.warnedCap {
		e.warnedCap = true
		e.log.Warn("detectors: max_clients reached, dropping least recently seen clients", "max_clients", e.cfg.MaxClients)
	}
	return s
}

// floodEvent reports whether ev is a connection that ended before any
// mail transaction, or a refusal before SMTP began: what a connection
// flood leaves in the log.
func floodEvent(ev *event.Event) bool {
	switch ev.Kind {
	case event.KindLostConnection:
		return ev.Stage == "CONNECT" || ev.Stage == "EHLO" || ev.Stage == "HELO" || ev.Stage == "STARTTLS"
	case event.KindTimeout:
		return ev.Stage == "CONNECT" || ev.Stage == "EHLO" || ev.Stage == "HELO"
	case event.KindHangup, event.KindTLSError:
		return true
	case event.KindRateLimit:
		// Connection floods; the message and recipient rate limits meet
		// busy legitimate senders (a newsletter, a web application).
		return ev.Detail == event.LimitConnectionRate || ev.Detail == event.LimitConnectionCount ||
			ev.Detail == event.LimitNewTLSRate
	}
	return false
}

// flood counts a flood event. A failed TLS handshake is one session
// however many lines it leaves (SSL_accept error, TLS library problem,
// lost connection after STARTTLS, or after CONNECT on the wrapper-mode
// port, all of one smtpd process): the SSL_accept error opens an entry,
// the pid's TLS library problems fold into it, and its lost connection
// folds in and closes it, so the next session of the same process counts
// anew. A TLS library problem has its client only borrowed from the
// process's last "connect from" (OpenSSL 3 logs one at the end of many
// ordinary sessions): it folds into an open entry or counts nothing.
// Bare connect-and-close drops count at their own, higher bar, and the
// connection concurrency limit once per window.
func (e *Engine) flood(s *state, o *obs, out []Decision) []Decision {
	ev := &o.ev
	tlsLine := ev.Kind == event.KindTLSError
	borrowed := tlsLine && !ev.Abuse
	lost := ev.Kind == event.KindLostConnection && (ev.Stage == "STARTTLS" || ev.Stage == "CONNECT")
	open := uint64(ev.PID)<<1 | 1
	if (tlsLine || lost) && ev.PID > 0 {
		if c := s.find(dFlood); c != nil && o.t >= c.muted {
			for i := len(c.ev) - 1; i >= 0 && o.t-c.ev[i].t < int64(tlsPairGap); i-- {
				if c.ev[i].h == open {
					if lost {
						c.ev[i].h = open &^ 1 // closed
					}
					return out
				}
			}
		}
	}
	h := uint64(0)
	switch {
	case borrowed:
		return out
	case tlsLine && ev.PID > 0:
		h = open
	case lost && ev.Stage == "CONNECT" && !ev.Abuse:
		return e.bump(s, dConnectDrops, o, 0, 1, out)
	case ev.Kind == event.KindRateLimit && ev.Detail == event.LimitConnectionCount:
		if c := s.find(dFlood); c != nil {
			c.expire(o.t, e.rules[dFlood].window)
			for i := range c.ev {
				if c.ev[i].h == concurrencyMark {
					return out
				}
			}
		}
		h = concurrencyMark
	}
	return e.bump(s, dFlood, o, h, 1, out)
}

// concurrencyMark is the hash of a flood entry for the connection
// concurrency limit; pid entries are below 2^33.
const concurrencyMark = ^uint64(0)

// softenFlood takes one failed TLS handshake out of key's flood window
// for a message accepted from it: an MTA whose TLS stack fails falls
// back to plain text and delivers once per failure.
func (e *Engine) softenFlood(key netip.Prefix) {
	s := e.clients.lookup(key)
	if s == nil {
		return
	}
	c := s.find(dFlood)
	if c == nil {
		return
	}
	for i := range c.ev {
		if h := c.ev[i].h; h != 0 && h != concurrencyMark {
			c.remove(h)
			return
		}
	}
}

// permanent reports a 5xx reject; a reject logged with only its DSN
// (cleanup) goes by the DSN's class.
func permanent(ev *event.Event) bool {
	if ev.Code == 0 {
		return strings.HasPrefix(ev.DSN, "5.")
	}
	return ev.Code/100 == 5
}

// loggedIn reports whether addr logged in successfully within detector
// d's window before t: its refusals are then the user's trouble (an
// attachment a body check refuses, a submission port that rejects mail
// sent without AUTH), not abuse.
func (e *Engine) loggedIn(addr netip.Addr, d detID, t int64) bool {
	g := e.recent.find(addr)
	return g != nil && g.login != 0 && t-g.login < e.rules[d].window
}

// acceptedLately reports whether a message from addr was accepted within
// the span before t.
func (e *Engine) acceptedLately(addr netip.Addr, t, span int64) bool {
	g := e.recent.find(addr)
	return g != nil && g.accepted != 0 && t-g.accepted < span
}

// tlsPairGap bounds the time between the lines of one failed handshake.
const tlsPairGap = 10 * time.Second

// structuralClient reports whether ev's client is certain by the line's
// structure: the client spec of an smtpd or cleanup line (or the guard's
// own peer), not an address read from free text or borrowed from
// another line of the same process.
func structuralClient(ev *event.Event) bool {
	if ev.Service == guardService {
		return true
	}
	prog := ev.Service[strings.LastIndexByte(ev.Service, '/')+1:]
	return prog == "smtpd" || prog == "cleanup"
}

// guardService is the Service of the inline guard's events: smtpguard's
// Service, which a test keeps equal (importing the guard here would bring
// its SMTP server into every user of the engine).
const guardService = "mxguard/guard"

// forgiveUser takes the username of a successful login out of the
// address's sasl_spray window (a user who mistyped, then got it right, is
// not a spray; "bob" failing and "bob@example.com" logging in is the same
// user), and remembers the login, which keeps admin_reject and
// content_reject quiet for the address for one of their windows.
func (e *Engine) forgiveUser(key netip.Prefix, addr netip.Addr, t int64, user string) {
	e.recent.slot(addr, t, true).login = t
	if user == "" || !e.rules[dSASLSpray].enabled {
		return
	}
	s := e.clients.lookup(key)
	if s == nil {
		return
	}
	if c := s.find(dSASLSpray); c != nil {
		c.remove(hashLower(user))
		if at := strings.LastIndexByte(user, '@'); at > 0 {
			c.remove(hashLower(user[:at]))
		}
	}
}

// prefixAccepted counts an accepted message for the prefix of addr, if
// the prefix is being watched for a dictionary attack.
func (e *Engine) prefixAccepted(addr netip.Addr, t int64) {
	r := &e.rules[dPrefixAccepted]
	if !r.enabled {
		return
	}
	ps := e.prefixes.lookup(e.prefixOf(addr))
	if ps == nil {
		return
	}
	c := ps.counter(dPrefixAccepted)
	c.expire(t, r.window)
	c.add(entry{t: t}, r.threshold, 0, false)
}

// dictPrefix counts a distinct unknown recipient (hash h) for the prefix
// of o's address, and decides for the prefix when enough distinct
// recipients from enough of its addresses fall within the window, unless
// as many messages from the prefix were accepted in that time.
func (e *Engine) dictPrefix(o *obs, h uint64, out []Decision) []Decision {
	r := &e.rules[dDictPrefix]
	if !r.enabled {
		return out
	}
	ps := e.prefixes.get(e.prefixOf(o.addr), o.t)
	c := ps.counter(dDictPrefix)
	if o.t < c.muted {
		return out
	}
	c.expire(o.t, r.window)
	c.add(entry{t: o.t, h: h, line: o.raw()}, r.threshold, e.keep, true)
	a := ps.counter(dDictPrefixAddrs)
	a.expire(o.t, r.window)
	a.add(entry{t: o.t, h: hashAddr(o.addr)}, e.prefAddrs, 0, true)
	owed := e.owes(ps.key, dDictPrefix, o.t)
	if !owed && (len(c.ev) < r.threshold || len(a.ev) < e.prefAddrs) {
		return out
	}
	if acc := ps.find(dPrefixAccepted); acc != nil && !owed {
		acc.expire(o.t, r.window)
		if len(acc.ev) >= len(c.ev) {
			return out // a busy sender's few stale addresses, not a harvest
		}
	}
	return append(out, e.decide(ps, c, dDictPrefix, o, len(c.ev), r.win))
}

// forgive resets the windows ds of key, if it is tracked. Mutes stay.
func (e *Engine) forgive(key netip.Prefix, ds ...detID) {
	s := e.clients.lookup(key)
	if s == nil {
		return
	}
	for _, d := range ds {
		if d == dScore {
			if s.score != nil {
				s.score.reset()
			}
			continue
		}
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
// the window holds the threshold (or the long window its own).
func (e *Engine) bump(s *state, d detID, o *obs, h uint64, n int, out []Decision) []Decision {
	r := &e.rules[d]
	if !r.enabled {
		return out
	}
	c := s.counter(d)
	if o.t < c.muted {
		return out
	}
	c.expire(o.t, max(r.window, r.longWindow))
	line := o.raw()
	for range n {
		c.add(entry{t: o.t, h: h, line: line}, r.limit(), e.keep, r.distinct)
		line = "" // one line of evidence per log line
	}
	n, win := len(c.ev), r.win
	if (d == dFlood || d == dConnectDrops) && n >= r.threshold && !e.owes(s.key, d, o.t) {
		// A client whose mail we accepted lately is a relay whose
		// sessions dropped at once (its restart, a network hiccup): about
		// its concurrency, so only up to floodExemptFactor × threshold
		// events within a window; past that, accepted mail buys nothing.
		if e.acceptedLately(o.addr, o.t, 2*r.window) &&
			c.spendForgiveness(o.t, r.window, (floodExemptFactor-1)*r.threshold) {
			return out
		}
	}
	if r.longWindow > 0 {
		n = c.since(o.t - r.window)
		if n < r.threshold && len(c.ev) >= r.longThreshold {
			return append(out, e.decide(s, c, d, o, len(c.ev), r.longWin))
		}
	}
	if n < r.threshold && !e.owes(s.key, d, o.t) {
		return out
	}
	return append(out, e.decide(s, c, d, o, n, win))
}

// floodExemptFactor bounds flood's exemption for a client with mail
// accepted lately: floodExemptFactor × threshold events within a window
// decide anyway. A relay restart drops about its concurrency (10-20
// sessions), not hundreds.
const floodExemptFactor = 3

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
	return append(out, e.decide(s, c, d, o, len(c.ev), r.win))
}

// decide builds the Decision from the newest n entries of c (the window
// win that decided), then resets c and mutes d for one window.
func (e *Engine) decide(s *state, c *counter, d detID, o *obs, n int, win Duration) Decision {
	r := &e.rules[d]
	var lines []string
	for i := len(c.ev) - n; i < len(c.ev); i++ {
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
		Reason:   e.reason(d, n, win, s.key, &o.ev),
		Evidence: n,
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

func (e *Engine) reason(d detID, n int, win Duration, key netip.Prefix, ev *event.Event) string {
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
	case dDictPrefix:
		return fmt.Sprintf("%d unknown %s from %d or more addresses of %s within %s", n,
			plural(n, "recipient", "recipients"), e.prefAddrs, key, win)
	case dFlood:
		return fmt.Sprintf("%d failed or refused %s within %s", n, plural(n, "connection", "connections"), win)
	case dAdminReject:
		return fmt.Sprintf("%d %s by the access lists within %s", n, plural(n, "refusal", "refusals"), win)
	case dContentReject:
		return fmt.Sprintf("%d %s rejected by content checks within %s", n, plural(n, "message", "messages"), win)
	case dSASLSpray:
		return fmt.Sprintf("%d SASL %s failing within %s", n, plural(n, "username", "usernames"), win)
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
