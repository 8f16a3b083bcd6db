package dnsbl

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Stats counts answers by rcode, transfers served and refused, and the
// secondary's last transfer.
func TestStatsCountsAnswersAndTransfers(t *testing.T) {
	ck := &clock{time.Now()}
	p := newTestPublisher(t, xfrConfig(), ck)
	st := p.Stats()
	if st.Serial == 0 || st.Serial != p.Serial() || st.Listings != p.Len() || st.Listings == 0 {
		t.Fatalf("zone in stats: serial %d listings %d, want %d and %d", st.Serial, st.Listings, p.Serial(), p.Len())
	}
	if len(st.Secondaries) != 1 || st.Secondaries[0].Addr != netip.MustParseAddr("192.0.2.53") || !st.Secondaries[0].LastTransfer.IsZero() {
		t.Fatalf("secondaries before any transfer: %+v", st.Secondaries)
	}

	query := func(name string) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		p.ServeDNS(&recorder{remote: udpAddr("198.51.100.1")}, m)
	}
	query("2.0.0.127.bl.example.") // the RFC 5782 test entry
	query("2.0.0.127.bl.example.")
	query("9.9.9.9.bl.example.")
	query("www.other.example.")

	xfr(t, p, tcpAddr("192.0.2.54"), dns.TypeAXFR, 0, true, nil)  // not a secondary
	xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeAXFR, 0, false, nil) // unsigned
	xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeAXFR, 0, true, nil)
	xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeIXFR, p.Serial(), true, nil) // up to date

	st = p.Stats()
	// Single-message replies to transfer requests are answers too: the
	// up-to-date IXFR (NOERROR) and the two refusals.
	for rc, want := range map[string]uint64{"NOERROR": 3, "NXDOMAIN": 1, "REFUSED": 3} {
		if got := st.Answers[rc]; got != want {
			t.Errorf("answers %s = %d, want %d (all: %v)", rc, got, want, st.Answers)
		}
	}
	if st.Transfers["axfr"] != 1 || st.Transfers["ixfr"] != 1 || st.TransfersRefused != 2 || st.TransfersFailed != 0 {
		t.Errorf("transfers %v, refused %d, failed %d; want axfr 1, ixfr 1, refused 2, failed 0",
			st.Transfers, st.TransfersRefused, st.TransfersFailed)
	}
	sec := st.Secondaries[0]
	if sec.LastTransfer.IsZero() || sec.LastKind != "ixfr" || sec.LastSerial != st.Serial {
		t.Errorf("secondary after transfers: %+v, want ixfr at serial %d", sec, st.Serial)
	}
}

// Counting an answer is on every query's path: no allocation.
func TestCountAnswerAllocatesNothing(t *testing.T) {
	var c counters
	if n := testing.AllocsPerRun(1000, func() {
		c.countAnswer(dns.RcodeNameError)
		c.countAnswer(dns.RcodeBadVers)
		c.countAnswer(4000)
	}); n != 0 {
		t.Errorf("countAnswer allocates %.0f times per run", n)
	}
	if c.answers[dns.RcodeNameError].Load() == 0 || c.answers[dns.RcodeBadVers].Load() == 0 || c.answersOther.Load() == 0 {
		t.Error("countAnswer counted nothing")
	}
}
