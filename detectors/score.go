package detectors

import (
	"fmt"
	"math"
	"strings"

	"github.com/mxguard/mxguard/internal/event"
)

// scoreClass is one kind of weak evidence the score detector weighs.
type scoreClass uint8

const (
	scNoHelo scoreClass = iota
	scVRFY
	scSenderNonFQDN
	scSenderDomainNotFound
	scRecipientNonFQDN
	scHeloReject
	scMultiRecipientBounce
	scBackscatter
	scHostnameMismatch
	scRelayDenied
	scPipelining
	scUnknownRecipient
	scAuthRequired
	scDNSBL
	nScore
	scNone = nScore
)

// scoreClassNames are the keys of detectors.score.weights, in class order.
var scoreClassNames = [nScore]string{
	"no_helo", "vrfy", "sender_non_fqdn", "sender_domain_not_found", "recipient_non_fqdn",
	"helo_reject", "multi_recipient_bounce", "backscatter", "hostname_mismatch", "relay_denied",
	"pipelining", "unknown_recipient", "auth_required", "dnsbl",
}

// list returns the weights in class order.
func (w ScoreWeights) list() [nScore]float64 {
	return [nScore]float64{
		w.NoHelo, w.VRFY, w.SenderNonFQDN, w.SenderDomainNotFound, w.RecipientNonFQDN,
		w.HeloReject, w.MultiRecipientBounce, w.Backscatter, w.HostnameMismatch, w.RelayDenied,
		w.Pipelining, w.UnknownRecipient, w.AuthRequired, w.DNSBL,
	}
}

// scorePart is one scored event kept as evidence.
type scorePart struct {
	class scoreClass
	w     float32
	line  string
}

// scoreState is a client's decaying score, per class. It exists only for
// clients that had a scored event.
type scoreState struct {
	at     int64 // log time the values were decayed to
	muted  int64
	events int // scored events since the last decision
	val    [nScore]float32
	parts  []scorePart // the newest evidence_lines scored events
}

// scoreClassOf classifies ev for the score detector; scNone when it is
// not weighed. n is how many times the class counts (1, or the VRFY/EXPN
// commands of a session, at most 5). Events that are not abuse count only
// where the class says so (a hostname mismatch is a warning, a message
// sent without HELO is accepted).
func scoreClassOf(ev *event.Event, dnsblRank int) (scoreClass, int) {
	switch ev.Kind {
	case event.KindDisconnect:
		return statsClass(ev.Detail)
	case event.KindHostnameMismatch:
		return scHostnameMismatch, 1
	case event.KindPipelining:
		return scPipelining, 1
	case event.KindDNSBL:
		// Abuse false: policy over inet or a warn-mode finding.
		if ev.Abuse && ev.Count > 0 && ev.Count < dnsblRank {
			return scDNSBL, 1
		}
		return scNone, 0
	case event.KindReject:
	default:
		return scNone, 0
	}
	if !ev.Abuse {
		return scNone, 0
	}
	switch r := ev.Reason; {
	case r == event.ReasonSenderNonFQDN:
		return scSenderNonFQDN, 1
	case r == event.ReasonSenderDomainNotFound:
		return scSenderDomainNotFound, 1
	case r == event.ReasonRecipientNonFQDN:
		return scRecipientNonFQDN, 1
	case r.IsHelo():
		return scHeloReject, 1
	case r == event.ReasonMultiRecipientBounce:
		return scMultiRecipientBounce, 1
	case r == event.ReasonRelayDenied:
		return scRelayDenied, 1
	case r == event.ReasonPipelining:
		return scPipelining, 1
	case r == event.ReasonAuthRequired:
		return scAuthRequired, 1
	case (r == event.ReasonUnknownRecipient || r == event.ReasonRecipientAccess) && ev.Stage == "RCPT" && ev.From == "" && hasTrailer(ev):
		// a bounce to an address we never had: backscatter of a
		// forged sender, or a bot posing as a bounce
		return scBackscatter, 1
	case r == event.ReasonUnknownRecipient:
		return scUnknownRecipient, 1
	}
	return scNone, 0
}

// hasTrailer reports whether the reject carried smtpd's envelope trailer,
// so an empty From is the null sender rather than a missing field.
func hasTrailer(ev *event.Event) bool { return ev.To != "" }

// statsClass reads smtpd's disconnect statistics: a session that sent
// MAIL without HELO/EHLO, or used VRFY/EXPN.
func statsClass(s string) (scoreClass, int) {
	if (strings.Contains(s, "ehlo=") || strings.Contains(s, "helo=")) &&
		!strings.Contains(s, "vrfy=") && !strings.Contains(s, "expn=") {
		return scNone, 0 // the common session: nothing to read
	}
	helo, mail, vrfy := false, 0, 0
	for s != "" {
		var tok string
		tok, s, _ = strings.Cut(s, " ")
		name, val, ok := strings.Cut(tok, "=")
		if !ok {
			continue
		}
		if _, total, slash := strings.Cut(val, "/"); slash {
			val = total
		}
		switch name {
		case "helo", "ehlo":
			helo = true
		case "mail":
			mail = max(atoi(val), 0)
		case "vrfy", "expn":
			vrfy += max(atoi(val), 0)
		}
	}
	switch {
	case mail > 0 && !helo:
		return scNoHelo, 1
	case vrfy > 0:
		return scVRFY, min(vrfy, 5)
	}
	return scNone, 0
}

// decayTo halves the score's values every halfLife up to t.
func (s *scoreState) decayTo(t, halfLife int64) {
	if t <= s.at {
		return
	}
	f := float32(math.Exp2(-float64(t-s.at) / float64(halfLife)))
	for i := range s.val {
		s.val[i] *= f
	}
	s.at = t
}

func (s *scoreState) total() float64 {
	var sum float64
	for _, v := range s.val {
		sum += float64(v)
	}
	return sum
}

func (s *scoreState) reset() {
	s.val = [nScore]float32{}
	s.events = 0
	clear(s.parts)
	s.parts = s.parts[:0]
}

// score adds n events of class c to the client's score and decides when
// it reaches the threshold.
func (e *Engine) score(s *state, c scoreClass, n int, o *obs, out []Decision) []Decision {
	w := e.weights[c]
	if w == 0 {
		return out
	}
	if s.score == nil {
		s.score = &scoreState{at: o.t}
		if g := e.recent.find(o.addr); g != nil && g.mismatch != 0 && c != scHostnameMismatch {
			// the hostname warning kept aside, decayed since
			m := e.weights[scHostnameMismatch]
			s.score.val[scHostnameMismatch] = m * float32(math.Exp2(-float64(o.t-g.mismatch)/float64(e.halfLife)))
			g.mismatch = 0
		}
	}
	sc := s.score
	if o.t < sc.muted {
		return out
	}
	sc.decayTo(o.t, e.halfLife)
	add := float32(float64(w) * float64(n))
	sc.val[c] = min(sc.val[c]+add, w*e.classCap)
	sc.events++
	if e.keep > 0 {
		if len(sc.parts) >= e.keep {
			n := copy(sc.parts, sc.parts[1:])
			sc.parts[n] = scorePart{}
			sc.parts = sc.parts[:n]
		}
		sc.parts = append(sc.parts, scorePart{class: c, w: add, line: o.raw()})
	}
	total := sc.total()
	if total+1e-6 < e.cfg.Score.Threshold && !e.owes(s.key, dScore, o.t) {
		return out
	}
	return append(out, e.decideScore(s, total, o))
}

func (e *Engine) decideScore(s *state, total float64, o *obs) Decision {
	sc := s.score
	r := &e.rules[dScore]
	var b strings.Builder
	fmt.Fprintf(&b, "score %s ≥ %s (", fmtPoints(total), fmtPoints(e.cfg.Score.Threshold))
	first := true
	for c, v := range sc.val {
		if v < 0.05 {
			continue
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		fmt.Fprintf(&b, "%s %s", scoreClassNames[c], fmtPoints(float64(v)))
	}
	fmt.Fprintf(&b, "; half-life %s)", e.cfg.Score.HalfLife)
	lines := make([]string, 0, len(sc.parts))
	for _, p := range sc.parts {
		lines = append(lines, fmt.Sprintf("score +%s %s: %s", fmtPoints(float64(p.w)), scoreClassNames[p.class], p.line))
	}
	dec := Decision{Prefix: s.key, Detector: r.name, Reason: b.String(), Evidence: sc.events,
		Time: o.ev.Time, Lines: lines, Warn: r.warn}
	own := dec.Reason
	e.payDebt(s.key, dScore, o.t, &dec) // takes a decision taken back's reason
	if total+1e-6 >= e.cfg.Score.Threshold {
		dec.Reason = own // the score alone decides again
	}
	sc.reset()
	sc.muted = o.t + r.window
	e.decisions[dScore]++
	return dec
}

// fmtPoints writes a score with at most one decimal: "12", "0.5".
func fmtPoints(v float64) string {
	v = math.Round(v*10) / 10
	if v == math.Trunc(v) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}
