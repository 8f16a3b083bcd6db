package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/smtpcheck"
)

const dunno = "DUNNO"

// finding is what one check found, before its action is applied.
type finding struct {
	kind   event.Kind
	reason event.Reason
	text   string // after event.PolicyMark
	detail string
	count  int
	// evidence: the finding counts against the client when enforced
	// (reject, defer, disconnect); never when only warned.
	evidence bool
}

// reply is the answer to Postfix and the code Postfix logs for it.
func reply(act Action, text string) (action string, code int, dsn string) {
	switch act {
	case Reject:
		return "REJECT " + text, 554, "5.7.1"
	case Defer:
		return "DEFER_IF_PERMIT " + text, 450, "4.7.1"
	case Disconnect:
		return "421 4.7.0 " + text, 421, "4.7.0"
	}
	return "WARN " + text, 0, ""
}

// answer applies act to f: the action text, and the event. final is
// false for a warning (the other checks still run).
func (s *Server) answer(q *query, act Action, f finding) (action string, final bool) {
	text := event.PolicyMark + f.text
	action, code, dsn := reply(act, text)
	kind := f.kind
	if act == Warn && (kind == event.KindReject || kind == event.KindDNSBL) {
		// as Postfix logs warn_if_reject: a warning, never a listing
		// the DNSBL detectors would weigh
		kind = event.KindRejectWarning
	}
	s.emit(q, event.Event{Kind: kind, Code: code, DSN: dsn, Reason: f.reason, Detail: f.detail,
		Count: f.count, Abuse: f.evidence && act != Warn && q.cs.evidence}, action)
	return action, act != Warn
}

// query is one request as the checks see it.
type query struct {
	cs    *connState
	r     *request
	state string
	ip    netip.Addr
	now   time.Time
}

// decide answers one request. It never fails: what it cannot judge it
// lets through (DUNNO).
func (s *Server) decide(cs *connState, r *request) string {
	raw := r.str(r.clientAddress)
	ip, err := netip.ParseAddr(raw)
	if err != nil {
		s.ctr.badClient.Add(1)
		s.warn.Warn("client_address", "policy: unparsable client_address, answered DUNNO", "client_address", sanitize(raw, 64))
		return dunno
	}
	q := &query{cs: cs, r: r, state: r.str(r.state), ip: ip.Unmap(), now: s.now()}
	allowlisted := s.allowed(q.ip)
	ch := s.cfg.Checks
	warned := ""
	// run applies a finding; it reports whether the answer is final
	run := func(act Action, f finding) (string, bool) {
		a, final := s.answer(q, act, f)
		if !final && warned == "" {
			warned = a
		}
		return a, final
	}

	rcpt := q.state == "RCPT"
	if !allowlisted {
		if ch.Blocklist != Off && s.blocklist != nil {
			if b, ok := s.blocklist.LookupEnforced(q.ip, q.now); ok {
				s.ctr.blocked.Add(1)
				// not evidence: the client is banned already, and counting
				// its refused attempts would feed the ban back into itself
				f := finding{kind: event.KindReject, reason: event.ReasonClientAccess,
					text: "client [" + q.ip.String() + "] is blocked", detail: b.Reason}
				if a, final := run(ch.Blocklist, f); final {
					return a
				}
			}
		}
		early := q.state == "CONNECT" || q.state == "EHLO" || q.state == "HELO" || q.state == "MAIL" || rcpt
		if early && q.state != "CONNECT" {
			if f, act, ok := s.checkHelo(q); ok {
				s.ctr.helo.Add(1)
				if a, final := run(act, f); final {
					return a
				}
			}
		}
		// one DNS budget for the whole request, DNSBL and FCrDNS together:
		// a dead DNS server costs dnsbl.timeout once, not once per check
		askDNSBL := early && ch.DNSBL != Off && len(s.sites) > 0 && s.resolver != nil
		askFCrDNS := rcpt && ch.FCrDNS != Off && s.resolver != nil && r.str(r.clientName) == "unknown"
		dnsCtx := context.Background()
		if askDNSBL || askFCrDNS {
			var cancel context.CancelFunc
			dnsCtx, cancel = context.WithTimeout(dnsCtx, s.cfg.DNSBL.Timeout.D())
			defer cancel()
		}
		// the PTR lookup runs beside the DNSBL lookups, so that a slow or
		// dead DNSBL zone cannot spend the budget FCrDNS needs
		var fcrdnsDone chan error
		if askFCrDNS {
			fcrdnsDone = make(chan error, 1)
			go func() {
				_, err := smtpcheck.FCrDNS(dnsCtx, s.resolver, q.ip)
				fcrdnsDone <- err
			}()
		}
		if askDNSBL {
			score, zones := smtpcheck.DNSBLScore(dnsCtx, s.resolver, s.sites, q.ip, s.cfg.DNSBL.Timeout.D())
			if score >= s.cfg.DNSBL.Threshold {
				s.ctr.dnsbl.Add(1)
				slices.Sort(zones)
				z := strings.Join(zones, ", ")
				f := finding{kind: event.KindDNSBL, reason: event.ReasonDNSBL, evidence: true,
					text: "Service unavailable; client [" + q.ip.String() + "] blocked using " + z, detail: z, count: score}
				if a, final := run(ch.DNSBL, f); final {
					return a
				}
			}
		}
		if askFCrDNS {
			err := <-fcrdnsDone
			// a DNS failure is our resolver's trouble: let the client through
			if errors.Is(err, smtpcheck.ErrNotFound) {
				s.ctr.fcrdns.Add(1)
				// never evidence: DNS may be at fault and real MTAs retry
				f := finding{kind: event.KindReject, reason: event.ReasonClientNoRDNS,
					text: "cannot find your hostname, [" + q.ip.String() + "]"}
				if a, final := run(ch.FCrDNS, f); final {
					return a
				}
			}
		}
	}

	rateKey := ""
	if s.rate != nil && (rcpt || q.state == "END-OF-MESSAGE") {
		rateKey = s.rateKey(q)
	}
	countAtRcpt := s.cfg.RateLimit.CountAt == "rcpt"
	counted := false // this recipient is counted already
	if rcpt && rateKey != "" {
		var l RateLimit
		var over bool
		if countAtRcpt {
			l, over = s.rate.tryAdd(rateKey, 1, q.now)
			counted = !over
		} else {
			l, over = s.rate.over(rateKey, 1, q.now)
		}
		if over {
			s.ctr.rateLimited.Add(1)
			// context, not evidence: one busy sender behind a shared
			// relay must not get the relay banned
			f := finding{kind: event.KindRateLimit, reason: event.ReasonOther,
				text: fmt.Sprintf("rate limit of %d per %s reached", l.Count, l.Window), detail: rateKey, count: l.Count}
			if a, final := run(s.cfg.RateLimit.Action, f); final {
				return a
			}
		}
	}
	action := dunno
	if rcpt && !allowlisted && s.grey != nil {
		a, final := s.greylist(cs, q)
		if final {
			if counted { // greylisted: it comes back and counts then
				s.rate.refund(rateKey, 1, q.now, q.now)
			}
			return a
		}
		if a != "" {
			action = a
		}
	}
	if rateKey != "" {
		switch {
		case rcpt && countAtRcpt && !counted: // over a limit, but only warned: it goes on, so it counts
			s.rate.add(rateKey, 1, q.now)
		case q.state == "END-OF-MESSAGE" && s.cfg.RateLimit.CountAt == "end_of_message":
			n, err := strconv.Atoi(r.str(r.recipientCount))
			if err != nil || n < 1 {
				n = 1
			}
			s.rate.add(rateKey, n, q.now)
		}
	}
	if warned != "" {
		return warned // one action per reply: a warning outranks a header
	}
	return action
}

// checkHelo judges helo_name: denied names (ours among them), the
// server's own address, then syntax.
func (s *Server) checkHelo(q *query) (finding, Action, bool) {
	ch := s.cfg.Checks
	helo := q.r.str(q.r.helo)
	if helo == "" || ch.HeloDeny == Off && ch.HeloFQDN == Off {
		return finding{}, Off, false
	}
	shown := func() string { return "<" + sanitize(helo, 100) + ">" }
	if ch.HeloDeny != Off && (s.heloDeny[lowerASCII(strings.TrimSuffix(helo, "."))] || s.isServerAddress(q, helo)) {
		return finding{kind: event.KindReject, reason: event.ReasonHeloAccess, evidence: true,
			text: "HELO name " + shown() + " denied", detail: sanitize(helo, 255)}, ch.HeloDeny, true
	}
	if ch.HeloFQDN == Off {
		return finding{}, Off, false
	}
	switch smtpcheck.HeloSyntax(helo) {
	case event.ReasonHeloInvalid:
		return finding{kind: event.KindReject, reason: event.ReasonHeloInvalid, evidence: true,
			text: "HELO name " + shown() + " is invalid", detail: sanitize(helo, 255)}, ch.HeloFQDN, true
	case event.ReasonHeloNonFQDN:
		return finding{kind: event.KindReject, reason: event.ReasonHeloNonFQDN, evidence: true,
			text: "HELO name " + shown() + " is not a fully-qualified hostname", detail: sanitize(helo, 255)}, ch.HeloFQDN, true
	}
	return finding{}, Off, false
}

// isServerAddress: the client greets with the address it connected to
// (bare or as a literal): only a forger does that.
func (s *Server) isServerAddress(q *query, helo string) bool {
	srv := q.r.str(q.r.serverAddress)
	if srv == "" {
		return false
	}
	lit := helo
	if strings.HasPrefix(lit, "[") && strings.HasSuffix(lit, "]") {
		lit = strings.TrimPrefix(lit[1:len(lit)-1], "IPv6:")
	}
	a, err := netip.ParseAddr(lit)
	if err != nil {
		return false
	}
	b, err := netip.ParseAddr(srv)
	return err == nil && a.Unmap() == b.Unmap()
}

// greylist checks the triplet; a passing retry is recorded at once
// (postgrey's way: the policy service does not learn whether Postfix
// accepted the recipient in the end). It returns the final answer, or a
// PREPEND header (final false), or "".
func (s *Server) greylist(cs *connState, q *query) (string, bool) {
	r := q.r
	from, to := r.str(r.sender), r.str(r.recipient)
	v, err := s.grey.Check(q.ip, from, to)
	if err != nil {
		s.warn.Warn("greylist", "policy: greylist failed, recipient let through", "err", err)
		return "", false
	}
	if v.Pass {
		if v.Retry == nil {
			return "", false
		}
		inst := r.str(r.instance)
		credit := inst == "" || inst != cs.greyCredited
		if err := s.grey.Commit(v.Retry, credit); err != nil {
			s.warn.Warn("greylist_commit", "policy: greylist commit failed", "err", err)
		}
		if credit {
			cs.greyCredited = strings.Clone(inst)
		}
		if s.cfg.Greylist.Prepend {
			return fmt.Sprintf("PREPEND X-Greylist: delayed %d seconds by mxguard at %s; %s",
				int64(v.Delayed/time.Second), s.cfg.Hostname, q.now.UTC().Format(time.RFC1123Z)), false
		}
		return "", false
	}
	s.ctr.greylisted.Add(1)
	secs := int64((v.Wait + time.Second - 1) / time.Second)
	text := fmt.Sprintf("Greylisted, see %s (try again in %d s)", s.cfg.Greylist.InfoURL, secs)
	act := s.cfg.Greylist.Action
	if act == Reject {
		// greylisting never refuses for good: reject means "450 at once",
		// not waiting for the other restrictions as DEFER_IF_PERMIT does
		action := "450 4.2.0 " + event.PolicyMark + text
		s.emit(q, event.Event{Kind: event.KindReject, Code: 450, DSN: "4.2.0", Reason: event.ReasonGreylisted}, action)
		return action, true
	}
	a, final := s.answer(q, act, finding{kind: event.KindReject, reason: event.ReasonGreylisted, text: text})
	return a, final
}

// rateKey is the key a request counts against: the SASL user, else the
// sender, else the client address (policyd-rate-limit's order).
func (s *Server) rateKey(q *query) string {
	if u := q.r.str(q.r.sasl); u != "" {
		return "sasl:" + u
	}
	if f := q.r.str(q.r.sender); f != "" {
		return "from:" + lowerASCII(f)
	}
	return "ip:" + q.ip.String()
}

func (s *Server) allowed(a netip.Addr) bool {
	for _, p := range s.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// emit queues an event for the answer action; serveConn sends it to the
// sink once the reply is written. Its strings are copies (the request's
// buffer is reused).
func (s *Server) emit(q *query, ev event.Event, action string) {
	if s.sink == nil {
		return
	}
	r := q.r
	ev.Time = q.now
	ev.Service = Service
	ev.Host = s.cfg.Hostname
	ev.Client = q.ip
	ev.Stage = strings.Clone(q.state)
	ev.ClientName = "unknown"
	if n := r.str(r.clientName); n != "" {
		ev.ClientName = sanitize(n, 255)
	}
	ev.Helo = sanitize(r.str(r.helo), 255)
	ev.From = sanitize(r.str(r.sender), 320)
	ev.To = sanitize(r.str(r.recipient), 320)
	if ev.Detail == "" {
		_, text, _ := strings.Cut(action, event.PolicyMark)
		ev.Detail = text
	}
	ev.Raw = fmt.Sprintf("policy: %s: %s from %s[%s]: action=%s; from=<%s> to=<%s> helo=<%s>",
		Service, ev.Stage, ev.ClientName, q.ip, action, ev.From, ev.To, ev.Helo)
	q.cs.pending = append(q.cs.pending, ev)
}

// sanitize makes Postfix-supplied text safe for logs and replies:
// printable ASCII, others as \xNN, cut to n bytes. It returns a new
// string (never one sharing the request buffer).
func sanitize(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\x%02x", c)
		}
	}
	return b.String()
}

// lowerASCII lower-cases s, allocating only when s has upper case.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
