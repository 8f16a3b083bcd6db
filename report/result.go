package report

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// Report is the finished report; its JSON form is the `--format json`
// output.
type Report struct {
	Summary    Summary     `json:"summary"`
	Helo       []HeloRow   `json:"helo"`
	Clients    []ClientRow `json:"clients"`
	Reasons    []CountRow  `json:"reasons"`
	Other      []CountRow  `json:"other_reasons"`
	Recipients []CountRow  `json:"recipients"`
	Senders    []CountRow  `json:"senders"`
	Postscreen []CountRow  `json:"postscreen"`
	Hourly     []HourRow   `json:"hourly"`
	// RejectWarnings is what warn_if_reject let through that would
	// otherwise have been rejected.
	RejectWarnings RejectWarnings `json:"reject_warnings"`
	// Approximate lists the sections that saw more distinct keys than
	// they track; their counts are lower bounds.
	Approximate []Approximation `json:"approximate,omitempty"`
}

// RejectWarnings summarises the reject_warning lines: the reason classes,
// clients and HELO names of the rejects warn_if_reject turned into
// warnings. Their clients and HELO names are ranked like rejected ones.
type RejectWarnings struct {
	Total   int64       `json:"total"`
	Reasons []CountRow  `json:"reasons"`
	Clients []ClientRow `json:"clients"`
	Helo    []HeloRow   `json:"helo"`
}

// Approximation says how far the counts of a section may be off: each
// count is at most MaxUndercount below the true count, and a key left out
// occurred at most MaxUndercount times.
type Approximation struct {
	Section       string `json:"section"`
	Capacity      int    `json:"capacity"`
	MaxUndercount int64  `json:"max_undercount"`
}

// Summary counts lines and outcomes.
type Summary struct {
	Lines        int64 `json:"lines"`
	PostfixLines int64 `json:"postfix_lines"`
	Recognised   int64 `json:"recognised"`
	// Context: Postfix lines about the mail system rather than a client
	// (start, stop, reload, table changes, TLS summaries): known, no event.
	Context        int64     `json:"context"`
	Skipped        int64     `json:"skipped"`
	TooLong        int64     `json:"too_long"`
	OutOfRange     int64     `json:"out_of_range"`
	First          time.Time `json:"first,omitzero"`
	Last           time.Time `json:"last,omitzero"`
	Connections    int64     `json:"connections"`
	Accepted       int64     `json:"accepted"`
	Rejected       int64     `json:"rejected"`
	RejectedBenign int64     `json:"rejected_benign"`
	Delivered      int64     `json:"delivered"`
	Deferred       int64     `json:"deferred"`
	Bounced        int64     `json:"bounced"`
	AbuseEvents    int64     `json:"abuse_events"`
	RejectClients  int       `json:"reject_clients"`
	// RejectClientsEstimated: more distinct clients than the capacity, so
	// RejectClients is an estimate (standard error about 1/sqrt(capacity)).
	RejectClientsEstimated bool `json:"reject_clients_estimated,omitempty"`
}

// HeloRow is one rejected HELO name.
type HeloRow struct {
	Helo    string `json:"helo"`
	Rejects int64  `json:"rejects"`
	Clients int    `json:"clients"`
	// ClientsEstimated: more than 64 distinct clients, so Clients is an
	// estimate (standard error about 13%).
	ClientsEstimated bool  `json:"clients_estimated,omitempty"`
	MaxUndercount    int64 `json:"max_undercount,omitempty"` // see Approximation
}

// ClientRow is one rejected client.
type ClientRow struct {
	IP      string   `json:"ip"`
	Name    string   `json:"name,omitempty"`
	Rejects int64    `json:"rejects"`
	Reasons []string `json:"reasons"`
	// MaxUndercount: see Approximation; the reasons and name may then miss
	// some lines too.
	MaxUndercount int64 `json:"max_undercount,omitempty"`
}

// CountRow is a key and how often it was seen.
type CountRow struct {
	Key           string `json:"key"`
	Count         int64  `json:"count"`
	MaxUndercount int64  `json:"max_undercount,omitempty"` // see Approximation
}

// HourRow is the activity of one hour.
type HourRow struct {
	Hour        time.Time `json:"hour"`
	Connections int64     `json:"connections"`
	Accepted    int64     `json:"accepted"`
	Rejected    int64     `json:"rejected"`
	Abuse       int64     `json:"abuse"`
}

// Result builds the report. loc is the zone used for hour buckets
// (nil: UTC).
func (a *Aggregator) Result(loc *time.Location) *Report {
	if loc == nil {
		loc = time.UTC
	}
	k := func(kind event.Kind) int64 { return a.kinds[kind] }
	r := &Report{Summary: Summary{
		Lines: a.lines, PostfixLines: a.postfix, Recognised: a.recognised, Context: a.context,
		Skipped: a.notPostfix + a.unrecognised + a.tooLong, TooLong: a.tooLong, OutOfRange: a.outOfRange,
		Connections: k(event.KindConnect), Accepted: k(event.KindReceived) + k(event.KindSASLLogin),
		Rejected: a.rejected, RejectedBenign: a.rejectedBenign,
		Delivered: k(event.KindDelivered), Deferred: k(event.KindDeferred), Bounced: k(event.KindBounced),
		AbuseEvents: a.abuse,
	}}
	rejectClients, estimated := a.rejectClients.count()
	r.Summary.RejectClients, r.Summary.RejectClientsEstimated = int(rejectClients), estimated
	if !a.first.IsZero() {
		r.Summary.First, r.Summary.Last = a.first.In(loc), a.last.In(loc)
	}
	n := a.opts.Top

	r.Helo = heloRows(a.helo, n)
	r.Clients = clientRows(a.clients, n)
	r.Reasons = reasonRows(&a.reasons)
	r.RejectWarnings = RejectWarnings{Total: a.warned, Reasons: reasonRows(&a.warnReasons),
		Clients: clientRows(a.warnClients, n), Helo: heloRows(a.warnHelo, n)}
	if r.RejectWarnings.Clients == nil { // a new section: [] rather than null
		r.RejectWarnings.Clients = []ClientRow{}
	}
	if r.RejectWarnings.Helo == nil {
		r.RejectWarnings.Helo = []HeloRow{}
	}
	r.Other = rows(a.other.counts(), n, a.other.under)
	r.Recipients = rows(a.recipients.counts(), n, a.recipients.under)
	r.Senders = rows(a.senders.counts(), n, a.senders.under)
	for _, s := range []struct {
		name  string
		under int64
	}{{"helo", a.helo.under}, {"clients", a.clients.under}, {"other_reasons", a.other.under},
		{"recipients", a.recipients.under}, {"senders", a.senders.under},
		{"warning_clients", a.warnClients.under}, {"warning_helo", a.warnHelo.under}} {
		if s.under > 0 {
			r.Approximate = append(r.Approximate, Approximation{Section: s.name, Capacity: a.opts.Capacity, MaxUndercount: s.under})
		}
	}

	ps := map[string]int64{}
	for _, kind := range []event.Kind{event.KindPSConnect, event.KindPSPass, event.KindPregreet,
		event.KindHangup, event.KindBareNewline, event.KindCommandLimit, event.KindDNSBL,
		event.KindPSAllowlisted, event.KindPSDenylisted, event.KindPSDisconnect} {
		if c := a.kinds[kind]; c > 0 {
			ps[strings.TrimPrefix(kind.String(), "ps_")] = c
		}
	}
	for _, kind := range []event.Kind{event.KindPipelining, event.KindNonSMTP} {
		if c := a.psShared[kind]; c > 0 {
			ps[kind.String()] = c
		}
	}
	if a.rejectedBenign > 0 {
		ps["service_unavailable"] = a.rejectedBenign
	}
	r.Postscreen = rows(ps, len(ps), 0)

	for _, hk := range sortedHours(a.hours) {
		h := a.hours[hk]
		r.Hourly = append(r.Hourly, HourRow{Hour: time.Unix(hk*3600, 0).In(loc),
			Connections: h.connections, Accepted: h.accepted, Rejected: h.rejected, Abuse: h.abuse})
	}
	return r
}

func heloRows(t *topCounter[string, heloStat], n int) []HeloRow {
	var out []HeloRow
	for _, h := range topKeys(t.counts(), n, strLess) {
		s := t.m[h]
		row := HeloRow{Helo: h, Rejects: s.n, MaxUndercount: t.under}
		clients, estimated := s.v.clients.count()
		row.Clients, row.ClientsEstimated = int(clients), estimated
		out = append(out, row)
	}
	return out
}

func clientRows(t *topCounter[netip.Addr, clientStat], n int) []ClientRow {
	var out []ClientRow
	for _, c := range topKeys(t.counts(), n, netip.Addr.Less) {
		s := t.m[c]
		row := ClientRow{IP: c.String(), Name: s.v.name, Rejects: s.n, Reasons: []string{}, MaxUndercount: t.under}
		for i := 0; i < 64; i++ {
			if s.v.reasons&(1<<i) != 0 {
				row.Reasons = append(row.Reasons, event.Reason(i).String())
			}
		}
		out = append(out, row)
	}
	return out
}

func reasonRows(counts *[64]int64) []CountRow {
	m := make(map[string]int64)
	for i, c := range counts {
		if c > 0 {
			m[event.Reason(i).String()] = c
		}
	}
	return rows(m, len(m), 0)
}

func strLess(a, b string) bool { return a < b }

func rows(m map[string]int64, n int, under int64) []CountRow {
	out := []CountRow{}
	for _, key := range topKeys(m, n, strLess) {
		out = append(out, CountRow{Key: key, Count: m[key], MaxUndercount: under})
	}
	return out
}

func sortedHours(m map[int64]*hourStat) []int64 {
	ks := make([]int64, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
