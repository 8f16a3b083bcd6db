// Package report aggregates events into the one-shot report: top rejected
// HELO names, clients, reasons, recipients, senders, postscreen outcomes and
// hourly activity, rendered as tables, JSON or CSV.
package report

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/logparse"
)

// Options select what enters the report.
type Options struct {
	Top   int       // rows per section; <= 0 means 10
	Since time.Time // zero: no lower bound
	Until time.Time // zero: no upper bound (exclusive)
	// Capacity is how many keys each top section (HELOs, clients,
	// recipients, senders, other texts) tracks; <= 0 means
	// DefaultCapacity. Counts are exact while a section has at most this
	// many distinct keys, otherwise approximate with a printed bound.
	Capacity int
}

// heloClients is how many distinct clients per HELO are counted exactly
// (then estimated).
const heloClients = 64

// Aggregator accumulates one or more streams of parsed lines. Its memory
// is bounded by Options.Capacity per top section (and grows with the
// number of distinct hours), never with the number of lines. Not safe for
// concurrent use; Merge the aggregators of parallel workers instead.
type Aggregator struct {
	opts Options

	lines, postfix, recognised, notPostfix, unrecognised, context, tooLong, outOfRange int64
	first, last                                                                        time.Time
	kinds                                                                              [64]int64
	psShared                                                                           [64]int64 // postscreen lines of kinds smtpd logs too
	reasons                                                                            [64]int64
	rejected, rejectedBenign, abuse                                                    int64

	helo          *topCounter[string, heloStat]
	clients       *topCounter[netip.Addr, clientStat]
	rejectClients distinctCounter // every rejected client, also those clients no longer tracks
	recipients    *topCounter[string, struct{}]
	senders       *topCounter[string, struct{}]
	other         *topCounter[string, struct{}]
	hours         map[int64]*hourStat

	// reject_warning lines (warn_if_reject): what would have been rejected
	warned      int64
	warnReasons [64]int64
	warnHelo    *topCounter[string, heloStat]
	warnClients *topCounter[netip.Addr, clientStat]
}

type heloStat struct {
	clients distinctCounter
}

type clientStat struct {
	name    string
	reasons uint64 // bit set of event.Reason
}

type hourStat struct {
	connections, accepted, rejected, abuse int64
}

// maxKeyLen bounds a key kept from a log line (HELO, address, text), so
// junk cannot make one entry huge.
const maxKeyLen = 256

// NewAggregator returns an empty Aggregator.
func NewAggregator(opts Options) *Aggregator {
	if opts.Top <= 0 {
		opts.Top = 10
	}
	if opts.Capacity <= 0 {
		opts.Capacity = DefaultCapacity
	}
	c := opts.Capacity
	mergeHelo := func(a, b *heloStat) { a.clients.mergeFrom(&b.clients) }
	mergeClient := func(a, b *clientStat) {
		a.reasons |= b.reasons
		if betterName(b.name, a.name) {
			a.name = b.name
		}
	}
	return &Aggregator{
		opts:          opts,
		helo:          newTopCounter(c, strings.Clone, mergeHelo),
		clients:       newTopCounter[netip.Addr](c, nil, mergeClient),
		warnHelo:      newTopCounter(c, strings.Clone, mergeHelo),
		warnClients:   newTopCounter[netip.Addr](c, nil, mergeClient),
		rejectClients: distinctCounter{size: c},
		recipients:    newTopCounter[string, struct{}](c, strings.Clone, nil),
		senders:       newTopCounter[string, struct{}](c, strings.Clone, nil),
		other:         newTopCounter[string, struct{}](c, strings.Clone, nil),
		hours:         make(map[int64]*hourStat),
	}
}

// AddTooLong counts lines skipped by the reader for their length.
func (a *Aggregator) AddTooLong(n int64) { a.tooLong += n; a.lines += n }

// Add accounts for one line and the result of parsing it. ev may alias the
// line's buffer: Add copies what it keeps.
func (a *Aggregator) Add(ev *event.Event, err error) {
	a.lines++
	switch err {
	case nil:
	case logparse.ErrNotPostfix:
		a.notPostfix++
		return
	case logparse.ErrContext:
		a.postfix++
		a.context++
		return
	default:
		a.postfix++
		a.unrecognised++
		return
	}
	a.postfix++
	if !a.opts.Since.IsZero() && ev.Time.Before(a.opts.Since) ||
		!a.opts.Until.IsZero() && !ev.Time.Before(a.opts.Until) {
		a.outOfRange++
		return
	}
	a.recognised++
	if a.first.IsZero() || ev.Time.Before(a.first) {
		a.first = ev.Time
	}
	if ev.Time.After(a.last) {
		a.last = ev.Time
	}
	a.kinds[ev.Kind]++
	if isPostscreen(ev.Service) && (ev.Kind == event.KindPipelining || ev.Kind == event.KindNonSMTP) {
		a.psShared[ev.Kind]++ // kinds postscreen shares with smtpd
	}
	h := a.hour(ev.Time)
	if ev.Abuse {
		a.abuse++
		h.abuse++
	}
	switch ev.Kind {
	case event.KindConnect:
		h.connections++
	case event.KindReceived, event.KindSASLLogin:
		h.accepted++
	case event.KindReject:
		a.addReject(ev, h)
	case event.KindRejectWarning:
		a.addRejectWarning(ev)
	}
}

// addRejectWarning counts what warn_if_reject let through, by the same
// keys as rejects: reason class, client, HELO name.
func (a *Aggregator) addRejectWarning(ev *event.Event) {
	a.warned++
	a.warnReasons[ev.Reason]++
	var clientHash uint64
	if ev.Client.IsValid() {
		clientHash = addrHash(ev.Client)
	}
	if ev.Helo != "" {
		if hs := a.warnHelo.add(clipKey(ev.Helo)); hs != nil && ev.Client.IsValid() {
			hs.v.addClient(clientHash)
		}
	}
	if ev.Client.IsValid() {
		a.addClient(a.warnClients, ev)
	}
}

// addClient counts ev's client in t with its name and reason class.
func (a *Aggregator) addClient(t *topCounter[netip.Addr, clientStat], ev *event.Event) *counted[clientStat] {
	cs := t.add(ev.Client)
	if cs != nil {
		if cs.n == 1 || betterName(clipKey(ev.ClientName), cs.v.name) {
			cs.v.name = clip(ev.ClientName)
		}
		cs.v.reasons |= 1 << ev.Reason
	}
	return cs
}

// addClient counts a client of a HELO name (exactly up to heloClients).
func (s *heloStat) addClient(h uint64) {
	if s.clients.size == 0 {
		s.clients.size = heloClients
	}
	s.clients.add(h)
}

func (a *Aggregator) addReject(ev *event.Event, h *hourStat) {
	a.reasons[ev.Reason]++
	if ev.Reason == event.ReasonServiceUnavailable {
		// postscreen's 450 4.3.2 to a client that just passed its tests
		a.rejectedBenign++
		return
	}
	a.rejected++
	h.rejected++
	var clientHash uint64
	if ev.Client.IsValid() {
		clientHash = addrHash(ev.Client)
	}
	if ev.Helo != "" {
		if hs := a.helo.add(clipKey(ev.Helo)); hs != nil && ev.Client.IsValid() {
			hs.v.addClient(clientHash)
		}
	}
	if ev.Client.IsValid() {
		if cs := a.addClient(a.clients, ev); cs == nil || cs.n == 1 {
			// new to the summary: maybe never seen, maybe dropped before
			a.rejectClients.add(clientHash)
		}
	}
	if ev.Reason == event.ReasonUnknownRecipient && ev.To != "" {
		count(a.recipients, ev.To)
	}
	if ev.Stage == "MAIL" || ev.Stage == "RCPT" || ev.Stage == "DATA" || ev.Stage == "END-OF-MESSAGE" {
		from := ev.From
		if from == "" {
			from = "<>"
		}
		count(a.senders, from)
	}
	if ev.Reason == event.ReasonOther || ev.Reason == event.ReasonMessageRejected {
		count(a.other, ev.Detail)
	}
}

// count counts k (clipped) in t. The summary stores a copy only for a new
// key and never assigns to an existing one, which would replace the stored
// key with the caller's string, possibly aliasing a reused line buffer.
func count(t *topCounter[string, struct{}], k string) { t.add(clipKey(k)) }

// addrHash is a well-mixed 64-bit hash of a (FNV-1a of its 16 bytes), the
// same in every worker, for the distinct-client counters.
func addrHash(a netip.Addr) uint64 {
	b := a.As16()
	h := uint64(14695981039346656037)
	h ^= binary.LittleEndian.Uint64(b[:8])
	h *= 1099511628211
	h ^= binary.LittleEndian.Uint64(b[8:])
	h *= 1099511628211
	return mix64(h)
}

// clipKey bounds a key without copying it.
func clipKey(s string) string {
	if len(s) > maxKeyLen {
		s = s[:maxKeyLen]
	}
	return s
}

func clip(s string) string { return strings.Clone(clipKey(s)) }

func isPostscreen(service string) bool { return strings.HasSuffix(service, "/postscreen") }

// betterName picks the name shown for a client seen under several: a
// resolved name beats "unknown", which beats none (postscreen logs no
// name), and among resolved names the smallest wins, so the result does
// not depend on line order or workers.
func betterName(cand, cur string) bool {
	rank := func(n string) int {
		switch n {
		case "":
			return 0
		case "unknown":
			return 1
		}
		return 2
	}
	if rank(cand) != rank(cur) {
		return rank(cand) > rank(cur)
	}
	return rank(cand) == 2 && cand < cur
}

func (a *Aggregator) hour(t time.Time) *hourStat {
	k := t.Unix() / 3600
	if t.Unix() < 0 && t.Unix()%3600 != 0 {
		k--
	}
	h := a.hours[k]
	if h == nil {
		h = &hourStat{}
		a.hours[k] = h
	}
	return h
}

// Merge adds b's counts into a. b must not be used afterwards.
func (a *Aggregator) Merge(b *Aggregator) {
	a.lines += b.lines
	a.postfix += b.postfix
	a.recognised += b.recognised
	a.notPostfix += b.notPostfix
	a.unrecognised += b.unrecognised
	a.context += b.context
	a.warned += b.warned
	a.tooLong += b.tooLong
	a.outOfRange += b.outOfRange
	a.rejected += b.rejected
	a.rejectedBenign += b.rejectedBenign
	a.abuse += b.abuse
	if !b.first.IsZero() && (a.first.IsZero() || b.first.Before(a.first)) {
		a.first = b.first
	}
	if b.last.After(a.last) {
		a.last = b.last
	}
	for i := range a.kinds {
		a.kinds[i] += b.kinds[i]
		a.psShared[i] += b.psShared[i]
		a.reasons[i] += b.reasons[i]
		a.warnReasons[i] += b.warnReasons[i]
	}
	a.warnHelo.mergeFrom(b.warnHelo)
	a.warnClients.mergeFrom(b.warnClients)
	a.helo.mergeFrom(b.helo)
	a.clients.mergeFrom(b.clients)
	a.rejectClients.mergeFrom(&b.rejectClients)
	a.recipients.mergeFrom(b.recipients)
	a.senders.mergeFrom(b.senders)
	a.other.mergeFrom(b.other)
	for k, hb := range b.hours {
		ha := a.hours[k]
		if ha == nil {
			a.hours[k] = hb
			continue
		}
		ha.connections += hb.connections
		ha.accepted += hb.accepted
		ha.rejected += hb.rejected
		ha.abuse += hb.abuse
	}
}

// topKeys returns up to n keys of m by descending count, ties by key.
func topKeys[K comparable](m map[K]int64, n int, less func(a, b K) bool) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ci, cj := m[keys[i]], m[keys[j]]
		if ci != cj {
			return ci > cj
		}
		return less(keys[i], keys[j])
	})
	if len(keys) > n {
		keys = keys[:n]
	}
	return keys
}
