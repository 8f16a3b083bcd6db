package dnsbl

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// rcodeSlots counts answers by rcode: the header's 4-bit rcodes (0-15) and
// BADVERS (16), the only extended one we send.
const rcodeSlots = 17

// counters are the publisher's counters, atomic so that the query path
// counts without a lock and without allocating.
type counters struct {
	answers       [rcodeSlots]atomic.Uint64 // by rcode
	answersOther  atomic.Uint64             // rcodes beyond rcodeSlots
	rateDropped   atomic.Uint64             // UDP queries dropped by the rate limit
	axfr, ixfr    atomic.Uint64             // transfers served (IXFR: up-to-date answers included)
	xfrRefused    atomic.Uint64             // transfers refused (not a secondary, not signed, no key)
	xfrFailed     atomic.Uint64             // transfers broken off while streaming
	notifySent    atomic.Uint64             // NOTIFYs a secondary acknowledged
	notifyFailed  atomic.Uint64             // NOTIFYs unanswered or answered with an error
	bySecondary   map[netip.Addr]*secondaryCounters
	secondaryList []netip.Addr // bySecondary's keys in config order
}

// secondaryCounters is one secondary's last transfer. The map holding
// them is built once in New and only read after.
type secondaryCounters struct {
	lastTransfer atomic.Int64  // unix nanoseconds; 0: none yet
	lastSerial   atomic.Uint32 // serial sent by that transfer
	lastIXFR     atomic.Bool
}

func (c *counters) countAnswer(rcode int) {
	if rcode >= 0 && rcode < rcodeSlots {
		c.answers[rcode].Add(1)
		return
	}
	c.answersOther.Add(1)
}

func (c *counters) countTransfer(client netip.Addr, ixfr bool, serial uint32, at time.Time) {
	if ixfr {
		c.ixfr.Add(1)
	} else {
		c.axfr.Add(1)
	}
	if s := c.bySecondary[client]; s != nil {
		s.lastSerial.Store(serial)
		s.lastIXFR.Store(ixfr)
		s.lastTransfer.Store(at.UnixNano())
	}
}

// Stats are the publisher's counters since start and its zone now.
type Stats struct {
	Zone     string `json:"zone"`
	Serial   uint32 `json:"serial"`
	Listings int    `json:"listings"` // the RFC 5782 test entries included
	// Answers are single-message replies (queries, and transfer requests
	// refused or up to date), by rcode name; streamed transfers are not.
	Answers map[string]uint64 `json:"answers"`
	// RateLimited are UDP queries dropped by the rate limit (no answer).
	RateLimited      uint64            `json:"rate_limited"`
	Transfers        map[string]uint64 `json:"transfers"` // served, by kind: axfr, ixfr
	TransfersRefused uint64            `json:"transfers_refused"`
	TransfersFailed  uint64            `json:"transfers_failed"`
	NotifySent       uint64            `json:"notify_sent"`
	NotifyFailed     uint64            `json:"notify_failed"`
	Secondaries      []SecondaryStatus `json:"secondaries,omitempty"`
}

// SecondaryStatus is what the publisher knows of one configured secondary.
type SecondaryStatus struct {
	Addr         netip.Addr `json:"addr"`
	LastTransfer time.Time  `json:"last_transfer,omitzero"` // zero: none since start
	LastKind     string     `json:"last_kind,omitempty"`    // axfr or ixfr
	LastSerial   uint32     `json:"last_serial,omitempty"`
}

// Stats returns a snapshot of the counters and the zone's serial and size.
func (p *Publisher) Stats() Stats {
	p.mu.RLock()
	serial, listings := p.serial, p.count
	p.mu.RUnlock()
	c := &p.stats
	s := Stats{Zone: p.zone, Serial: serial, Listings: listings, Answers: map[string]uint64{},
		RateLimited: c.rateDropped.Load(), Transfers: map[string]uint64{"axfr": c.axfr.Load(), "ixfr": c.ixfr.Load()},
		TransfersRefused: c.xfrRefused.Load(), TransfersFailed: c.xfrFailed.Load(),
		NotifySent: c.notifySent.Load(), NotifyFailed: c.notifyFailed.Load()}
	for rc := range c.answers {
		if n := c.answers[rc].Load(); n > 0 {
			s.Answers[rcodeName(rc)] = n
		}
	}
	if n := c.answersOther.Load(); n > 0 {
		s.Answers["OTHER"] = n
	}
	for _, a := range c.secondaryList {
		sc := c.bySecondary[a]
		ss := SecondaryStatus{Addr: a}
		if ns := sc.lastTransfer.Load(); ns != 0 {
			ss.LastTransfer = time.Unix(0, ns)
			ss.LastSerial = sc.lastSerial.Load()
			ss.LastKind = "axfr"
			if sc.lastIXFR.Load() {
				ss.LastKind = "ixfr"
			}
		}
		s.Secondaries = append(s.Secondaries, ss)
	}
	return s
}

func rcodeName(rc int) string {
	if n, ok := dns.RcodeToString[rc]; ok {
		return n
	}
	return "OTHER"
}
