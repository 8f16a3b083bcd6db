// Package report aggregates events into the one-shot report: top rejected
// HELO names, clients, reasons, recipients, senders, postscreen outcomes and
// hourly activity, rendered as tables, JSON or CSV.
package report

import (
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
}

// Aggregator accumulates one or more streams of parsed lines. Its memory
// grows with the number of distinct keys (HELOs, clients, addresses, hours),
// never with the number of lines. Not safe for concurrent use; Merge the
// aggregators of parallel workers instead.
type Aggregator struct {
	opts Options

	lines, postfix, recognised, notPostfix, unrecognised, tooLong, outOfRange int64
	first, last                                                               time.Time
	kinds                                                                     [64]int64
	psShared                                                                  [64]int64 // postscreen lines of kinds smtpd logs too
	reasons                                                                   [64]int64
	rejected, rejectedBenign, abuse                                           int64

	helo       map[string]*heloStat
	clients    map[netip.Addr]*clientStat
	recipients counter
	senders    counter
	other      counter
	hours      map[int64]*hourStat
}

type heloStat struct {
	rejects int64
	clients map[netip.Addr]struct{}
}

type clientStat struct {
	name    string
	rejects int64
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
	return &Aggregator{
		opts:       opts,
		helo:       make(map[string]*heloStat),
		clients:    make(map[netip.Addr]*clientStat),
		recipients: make(counter),
		senders:    make(counter),
		other:      make(counter),
		hours:      make(map[int64]*hourStat),
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
	}
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
	if ev.Helo != "" {
		helo := clipKey(ev.Helo)
		hs := a.helo[helo]
		if hs == nil {
			hs = &heloStat{clients: make(map[netip.Addr]struct{}, 1)}
			a.helo[strings.Clone(helo)] = hs
		}
		hs.rejects++
		if ev.Client.IsValid() {
			hs.clients[ev.Client] = struct{}{}
		}
	}
	if ev.Client.IsValid() {
		cs := a.clients[ev.Client]
		if cs == nil {
			cs = &clientStat{name: clip(ev.ClientName)}
			a.clients[ev.Client] = cs
		} else if betterName(clipKey(ev.ClientName), cs.name) {
			cs.name = clip(ev.ClientName)
		}
		cs.rejects++
		cs.reasons |= 1 << ev.Reason
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

// counter counts strings. Its values are pointers so that counting an
// existing key never assigns to the map: an assignment replaces the stored
// key with the caller's string, which may alias a reused line buffer.
type counter map[string]*int64

// count increments m[k], cloning k only when it becomes a new key.
func count(m counter, k string) {
	k = clipKey(k)
	if p := m[k]; p != nil {
		*p++
		return
	}
	n := int64(1)
	m[strings.Clone(k)] = &n
}

// values returns the counts as plain numbers, for sorting.
func (m counter) values() map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, p := range m {
		out[k] = *p
	}
	return out
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
	}
	for k, hb := range b.helo {
		ha := a.helo[k]
		if ha == nil {
			a.helo[k] = hb
			continue
		}
		ha.rejects += hb.rejects
		for c := range hb.clients {
			ha.clients[c] = struct{}{}
		}
	}
	for k, cb := range b.clients {
		ca := a.clients[k]
		if ca == nil {
			a.clients[k] = cb
			continue
		}
		ca.rejects += cb.rejects
		ca.reasons |= cb.reasons
		if betterName(cb.name, ca.name) {
			ca.name = cb.name
		}
	}
	mergeCounts(a.recipients, b.recipients)
	mergeCounts(a.senders, b.senders)
	mergeCounts(a.other, b.other)
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

func mergeCounts(a, b counter) {
	for k, pb := range b {
		if pa := a[k]; pa != nil {
			*pa += *pb
		} else {
			a[k] = pb
		}
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
