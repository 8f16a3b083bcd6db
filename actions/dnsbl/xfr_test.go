package dnsbl

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/tsig"
)

// recorder is a dns.ResponseWriter that keeps what is written.
type recorder struct {
	remote net.Addr
	tsig   error
	msgs   []*dns.Msg
}

func udpAddr(ip string) *net.UDPAddr { return &net.UDPAddr{IP: net.ParseIP(ip), Port: 5353} }
func tcpAddr(ip string) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 5353} }

func (r *recorder) LocalAddr() net.Addr       { return udpAddr("127.0.0.1") }
func (r *recorder) RemoteAddr() net.Addr      { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error { r.msgs = append(r.msgs, m.Copy()); return nil }
func (r *recorder) Write([]byte) (int, error) { return 0, nil }
func (r *recorder) Close() error              { return nil }
func (r *recorder) TsigStatus() error         { return r.tsig }
func (r *recorder) TsigTimersOnly(bool)       {}
func (r *recorder) Hijack()                   {}

func xfrConfig() Config {
	c := testConfig()
	c.Secondaries = []string{"192.0.2.53:5300"}
	c.TSIG = tsig.Key{Name: "xfr-key", Algorithm: "hmac-sha256", Secret: testSecret}
	return c
}

// xfr asks for a transfer through the handler; tsig is the verification
// result the server would have (nil: valid); signed adds a TSIG record.
func xfr(t *testing.T, p *Publisher, from net.Addr, qtype uint16, serial uint32, signed bool, tsig error) []*dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if qtype == dns.TypeIXFR {
		m.SetIxfr(p.zone, serial, "ns.", "mbox.")
	} else {
		m.SetAxfr(p.zone)
	}
	if signed {
		m.SetTsig("xfr-key.", dns.HmacSHA256, 300, time.Now().Unix())
	}
	w := &recorder{remote: from, tsig: tsig}
	p.ServeDNS(w, m)
	return w.msgs
}

func records(msgs []*dns.Msg) []dns.RR {
	var out []dns.RR
	for _, m := range msgs {
		for _, rr := range m.Answer {
			if rr.Header().Rrtype != dns.TypeTSIG {
				out = append(out, rr)
			}
		}
	}
	return out
}

func TestTransferRefusals(t *testing.T) {
	ck := &clock{time.Now()}
	p := newTestPublisher(t, xfrConfig(), ck)
	for _, tc := range []struct {
		name   string
		from   net.Addr
		signed bool
		tsig   error
		rcode  int
	}{
		{"unsigned from the secondary", tcpAddr("192.0.2.53"), false, nil, dns.RcodeRefused},
		{"signed from elsewhere", tcpAddr("192.0.2.54"), true, nil, dns.RcodeRefused},
		{"bad signature", tcpAddr("192.0.2.53"), true, dns.ErrSig, dns.RcodeNotAuth},
		{"unknown key", tcpAddr("192.0.2.53"), true, dns.ErrSecret, dns.RcodeNotAuth},
		{"good", tcpAddr("192.0.2.53"), true, nil, dns.RcodeSuccess},
	} {
		msgs := xfr(t, p, tc.from, dns.TypeAXFR, 0, tc.signed, tc.tsig)
		if len(msgs) == 0 || msgs[0].Rcode != tc.rcode {
			t.Errorf("%s: %v, want rcode %s", tc.name, msgs, dns.RcodeToString[tc.rcode])
			continue
		}
		if tc.rcode != dns.RcodeSuccess && len(records(msgs)) != 0 {
			t.Errorf("%s: refused, but records sent", tc.name)
		}
	}
}

// zoneAfter applies an IXFR's differences to the records of an AXFR.
func zoneAfter(t *testing.T, axfr, ixfr []dns.RR) []string {
	t.Helper()
	set := map[string]bool{}
	for _, rr := range axfr[1 : len(axfr)-1] {
		set[rr.String()] = true
	}
	if len(ixfr) < 2 {
		t.Fatalf("IXFR too short: %v", ixfr)
	}
	body := ixfr[1 : len(ixfr)-1]
	deleting := false
	for _, rr := range body {
		if s, ok := rr.(*dns.SOA); ok {
			deleting = !deleting
			_ = s
			continue
		}
		if deleting {
			if !set[rr.String()] {
				t.Fatalf("IXFR deletes %s, which is not in the zone", rr)
			}
			delete(set, rr.String())
		} else {
			set[rr.String()] = true
		}
	}
	return sortedKeys(set)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func axfrSet(rrs []dns.RR) []string {
	set := map[string]bool{}
	for _, rr := range rrs[1 : len(rrs)-1] {
		set[rr.String()] = true
	}
	return sortedKeys(set)
}

func TestIXFRJournalAndFallback(t *testing.T) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	cfg := xfrConfig()
	cfg.Journal = 100 // records: the steps below, not 30 more
	p := newTestPublisher(t, cfg, ck)
	ctx := context.Background()
	sec := tcpAddr("192.0.2.53")
	until := ck.t.Add(time.Hour)
	p.Apply(ctx, mkBan("198.51.100.0/24", "manual", until))
	base := records(xfr(t, p, sec, dns.TypeAXFR, 0, true, nil))
	baseSerial := base[0].(*dns.SOA).Serial
	if baseSerial != p.Serial() || base[len(base)-1].(*dns.SOA).Serial != baseSerial {
		t.Fatalf("AXFR not framed by the current SOA: %v", base)
	}
	// Nested bans: a /32 inside the /24, and a /16 off-boundary ... the
	// /24 wildcard keeps answering beside the /32.
	p.Apply(ctx, mkBan("198.51.100.9/32", "dictionary", until))
	p.Apply(ctx, mkBan("2001:db8:5::/48", "dictionary", until))
	p.Apply(ctx, mkBan("2001:db8:5:1::7/128", "sasl_bruteforce", until))
	p.Revoke(ctx, netip.MustParsePrefix("198.51.100.0/24"))

	ix := records(xfr(t, p, sec, dns.TypeIXFR, baseSerial, true, nil))
	if ix[0].(*dns.SOA).Serial != p.Serial() {
		t.Fatalf("IXFR starts with serial %d, want %d", ix[0].(*dns.SOA).Serial, p.Serial())
	}
	if ix[1].Header().Rrtype != dns.TypeSOA || ix[1].(*dns.SOA).Serial != baseSerial {
		t.Fatalf("IXFR is not incremental from %d: %v", baseSerial, ix[:2])
	}
	full := records(xfr(t, p, sec, dns.TypeAXFR, 0, true, nil))
	if got, want := zoneAfter(t, base, ix), axfrSet(full); !slices.Equal(got, want) {
		t.Fatalf("AXFR + IXFR differs from a fresh AXFR:\n got %v\nwant %v", got, want)
	}
	// Up to date: one SOA.
	if up := records(xfr(t, p, sec, dns.TypeIXFR, p.Serial(), true, nil)); len(up) != 1 {
		t.Errorf("IXFR from the current serial: %d records, want the SOA", len(up))
	}
	// Many more changes push the base serial out of the journal: AXFR.
	for i := range 30 {
		p.Apply(ctx, mkBan(netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32).String(), "dictionary", until))
	}
	old := records(xfr(t, p, sec, dns.TypeIXFR, baseSerial, true, nil))
	if len(old) < 3 || old[1].Header().Rrtype == dns.TypeSOA {
		t.Fatalf("IXFR from a serial beyond the journal is not a full zone: %v", old[:min(3, len(old))])
	}
	if got, want := axfrSet(old), axfrSet(records(xfr(t, p, sec, dns.TypeAXFR, 0, true, nil))); !slices.Equal(got, want) {
		t.Fatalf("fallback differs from AXFR")
	}
}

// TestRenderedZoneMatchesLookups checks that a secondary, resolving with
// DNS wildcard rules over the transferred records, answers every probed
// address and path name as the built-in server does, nested and
// off-boundary bans included, and across the families: IPv4 names whose
// labels are single digits are also IPv6 nibble paths.
func TestRenderedZoneMatchesLookups(t *testing.T) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	p := newTestPublisher(t, xfrConfig(), ck) // IPv4 regions are /16s
	ctx := context.Background()
	until := ck.t.Add(time.Hour)
	bans := []struct{ prefix, det string }{
		{"10.1.0.0/23", "manual"}, {"10.1.1.77/32", "dictionary"}, {"10.1.0.128/25", "pregreet"},
		{"10.2.3.4/32", "sasl_bruteforce"}, {"10.2.3.0/30", "bad_helo"},
		{"2001:db8:7::/48", "manual"}, {"2001:db8:7:1:2::/80", "dictionary"}, {"2001:db8:7:1:2:3:4:5/128", "sasl_bruteforce"},
		{"2001:db8:8::/50", "pregreet"},
		// cross-family: digit-only IPv4 wildcards over IPv6 paths, and
		// IPv6 listings whose path names are IPv4 names
		{"2.6.0.0/24", "manual"}, {"3.0.0.0/16", "pregreet"}, {"3.0.5.6/32", "dictionary"},
		{"2607:1::5/128", "dictionary"}, {"3005:1::/48", "sasl_bruteforce"}, {"4001:2::9/128", "bad_helo"},
	}
	for _, b := range bans {
		p.Apply(ctx, mkBan(b.prefix, b.det, until))
	}
	zone := records(xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeAXFR, 0, true, nil))
	names := map[string]string{} // owner → A
	owners := map[string]bool{}
	for _, rr := range zone {
		owners[strings.ToLower(rr.Header().Name)] = true
		if a, ok := rr.(*dns.A); ok {
			names[strings.ToLower(a.Hdr.Name)] = a.A.String()
		}
	}
	exists := func(n string) bool {
		for owner := range owners {
			if owner == n || strings.HasSuffix(owner, "."+n) {
				return true
			}
		}
		return false
	}
	// resolve applies RFC 4592: exact name, else the wildcard at the
	// closest encloser; it returns the A record, NODATA or NXDOMAIN.
	resolve := func(q string) string {
		if a, ok := names[q]; ok {
			return a
		}
		if exists(q) {
			return "NODATA"
		}
		ce := q
		for ce != p.zone {
			ce = ce[strings.IndexByte(ce, '.')+1:]
			if ce == p.zone || exists(ce) {
				break
			}
		}
		if a, ok := names["*."+ce]; ok {
			return a
		}
		return "NXDOMAIN"
	}
	served := func(name string) string {
		m := ask(t, p, name, dns.TypeA)
		switch {
		case m.Rcode != dns.RcodeSuccess:
			return dns.RcodeToString[m.Rcode]
		case len(m.Answer) == 0:
			return "NODATA"
		}
		return m.Answer[0].(*dns.A).A.String()
	}
	probes := []string{"10.1.0.1", "10.1.0.200", "10.1.1.77", "10.1.1.78", "10.1.2.1", "10.2.3.4", "10.2.3.3", "10.2.3.5",
		"2001:db8:7::1", "2001:db8:7:1:2::9", "2001:db8:7:1:2:3:4:5", "2001:db8:7:1:2:3:4:6", "2001:db8:7:1:3::1",
		"2001:db8:8::1", "2001:db8:8:3fff::1", "2001:db8:8:4000::1", "127.0.0.2", "::2",
		"2.6.0.7", "2.6.0.77", "2.6.0.10", "2.6.1.7", "2600:1f18::1", "2607:1::5", "2607:1::6", "260a::1", "2607:f8b0::1",
		"3.0.0.5", "3.0.5.6", "3.0.5.7", "3.0.9.200", "3.0.200.1", "3000::1", "3005:1::1", "3005:2::1", "30a0::1", "300f::1",
		"4.0.0.1", "4001:2::9", "4001:2::8"}
	for _, s := range probes {
		a := netip.MustParseAddr(s)
		want := "not listed"
		if b, ok := p.index.Lookup(a, ck.t); ok {
			want = p.code(b.Detector).A.String()
		}
		got := resolve(queryName(a, p.zone))
		if got == "NXDOMAIN" || got == "NODATA" {
			got = "not listed"
		}
		if got != want {
			t.Errorf("%s: the transferred zone answers %q, the index %q", s, got, want)
		}
		if got, srv := resolve(queryName(a, p.zone)), served(queryName(a, p.zone)); got != srv {
			t.Errorf("%s: the transferred zone answers %q, the server %q", s, got, srv)
		}
	}
	// path names: prefixes of either family and placeholders (not names
	// above an IPv6 region: the server says NODATA for all of them)
	for _, rel := range []string{"2", "6.2", "0.6.2", "1.6.2", "7.0.6.2", "a.0.6.2", "_.a.0.6.2", "_.f.0.6.2", "_.a.1.6.2",
		"0.3", "5.0.3", "9.0.3", "a.0.3", "_.a.0.3", "_.c.5.0.3", "0.0.3", "1.0.0.3", "1.0.4", "0.0.4", "0.4",
		"1.0.0.4", "10.1", "1.10"} {
		name := rel + "." + p.zone
		if got, srv := resolve(name), served(name); got != srv {
			t.Errorf("%s: the transferred zone answers %q, the server %q", rel, got, srv)
		}
	}
}
