package dnsbl

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
)

func startTestServer(t *testing.T, cfg Config) *Publisher {
	t.Helper()
	p, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// Over real sockets: UDP and TCP, EDNS echoed when asked, BADVERS for an
// EDNS version we do not speak.
func TestServerUDPTCPAndEDNS(t *testing.T) {
	p := startTestServer(t, testConfig())
	until := time.Now().Add(time.Hour)
	long := strings.Repeat("word ", 30)
	p.Apply(context.Background(), ban.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Detector: "dictionary", Reason: long, Until: until})
	name := queryName(netip.MustParseAddr("192.0.2.7"), p.zone)
	for _, tc := range []struct {
		net  string
		edns uint16 // 0: none
		qt   uint16
	}{
		{"udp", 0, dns.TypeA},
		{"tcp", 0, dns.TypeA},
		{"udp", 1232, dns.TypeTXT},
		{"udp", 0, dns.TypeANY},
		{"tcp", 4096, dns.TypeANY},
	} {
		m := new(dns.Msg)
		m.SetQuestion(name, tc.qt)
		if tc.edns > 0 {
			m.SetEdns0(tc.edns, false)
		}
		c := &dns.Client{Net: tc.net, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(m, p.Addr())
		if err != nil {
			t.Fatalf("%s %s: %v", tc.net, dns.TypeToString[tc.qt], err)
		}
		if r.Truncated || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("%s %s edns %d: rcode %s tc %v answers %d", tc.net, dns.TypeToString[tc.qt], tc.edns,
				dns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer))
		}
		if (r.IsEdns0() != nil) != (tc.edns > 0) {
			t.Errorf("%s edns %d: reply EDNS %v", tc.net, tc.edns, r.IsEdns0())
		}
	}
	// EDNS version 1 is BADVERS.
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	r, err := dns.Exchange(m, p.Addr())
	if err != nil || r.IsEdns0() == nil || r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %v %v", r, err)
	}
}

func TestRateLimit(t *testing.T) {
	l := newRateLimiter(10, 5, 2)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 5 {
		if !l.allow(a, now) {
			t.Fatalf("query %d of the burst refused", i)
		}
	}
	if l.allow(a, now) {
		t.Fatal("sixth query within the same instant allowed")
	}
	if !l.allow(a, now.Add(100*time.Millisecond)) { // 10 qps: one token back
		t.Fatal("no token after 100ms")
	}
	// One IPv6 host is one client across its /56.
	v6a, v6b := netip.MustParseAddr("2001:db8:0:1::1"), netip.MustParseAddr("2001:db8:0:2::1")
	for range 5 {
		l.allow(v6a, now)
	}
	if l.allow(v6b, now) {
		t.Fatal("another address of the same /56 has a bucket of its own")
	}
	// The map stays bounded.
	for i := range 100 {
		l.allow(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), now)
	}
	if len(l.buckets) > 2 {
		t.Fatalf("%d buckets, bound 2", len(l.buckets))
	}
}

// A flood from one client over UDP is dropped past its burst; another
// client is still answered.
func TestServerRateLimited(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimit = RateLimit{QPS: 1, Burst: 3, Clients: 100}
	p := startTestServer(t, cfg)
	name := queryName(netip.MustParseAddr("127.0.0.2"), p.zone)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	answered := 0
	for range 6 {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		if _, _, err := c.Exchange(m, p.Addr()); err == nil {
			answered++
		}
	}
	if answered != 3 {
		t.Errorf("%d of 6 queries answered, want the burst of 3", answered)
	}
}

func TestSyncOneStep(t *testing.T) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	p := newTestPublisher(t, xfrConfig(), ck)
	ctx := context.Background()
	until := ck.t.Add(time.Hour)
	p.Apply(ctx, mkBan("192.0.2.1/32", "dictionary", until))
	p.Apply(ctx, mkBan("192.0.2.2/32", "dictionary", until))
	base := records(xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeAXFR, 0, true, nil))
	s := p.Serial()
	p.Sync(ctx, []ban.Ban{
		mkBan("192.0.2.2/32", "dictionary", until), // kept
		mkBan("192.0.2.3/32", "manual", until),     // new
		mkBan("192.0.2.4/32", "peer:mx2", until),   // never
		{Prefix: netip.MustParsePrefix("192.0.2.5/32"), Detector: "manual", Until: until, DryRun: true},
	})
	if p.Serial() == s || !serialLess(s, p.Serial()) {
		t.Fatalf("Sync did not move the serial")
	}
	if got := p.Len(); got != 2+len(testEntries) {
		t.Fatalf("after Sync %d listings, want 2 and the test entries", got)
	}
	ix := records(xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeIXFR, s, true, nil))
	if n := strings.Count(dnsString(ix), "SOA"); n != 4 {
		t.Errorf("Sync is %d SOA records in IXFR, want one step (4)", n)
	}
	full := records(xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeAXFR, 0, true, nil))
	if got, want := strings.Join(zoneAfter(t, base, ix), "\n"), strings.Join(axfrSet(full), "\n"); got != want {
		t.Errorf("IXFR of the Sync:\n%s\nwant\n%s", got, want)
	}
}

func dnsString(rrs []dns.RR) string {
	var b strings.Builder
	for _, rr := range rrs {
		b.WriteString(rr.String() + "\n")
	}
	return b.String()
}

func TestRbldnsdFile(t *testing.T) {
	cfg := testConfig()
	cfg.RbldnsdFile = filepath.Join(t.TempDir(), "fleet.rbl")
	p := startTestServer(t, cfg)
	until := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ctx := context.Background()
	p.Apply(ctx, mkBan("192.0.2.7/32", "dictionary", until))
	p.Apply(ctx, mkBan("198.51.100.0/24", "manual", until))
	p.Apply(ctx, mkBan("2001:db8::/48", "sasl_bruteforce", until))
	p.Apply(ctx, mkBan("192.0.2.9/32", "peer:mx2", until))
	want := []string{
		"$DATASET ip4trie @",
		"127.0.0.2 :127.0.0.2:test: RFC 5782 test entry; until 9999-12-31T00:00:00Z",
		"192.0.2.7 :127.0.0.2:dictionary: 5 unknown recipients within 10m0s; until 2030-01-02T03:04:05Z",
		"198.51.100.0/24 :127.0.0.10:manual: 5 unknown recipients within 10m0s; until 2030-01-02T03:04:05Z",
		"$DATASET ip6trie @",
		"::2 :127.0.0.2:test: RFC 5782 test entry; until 9999-12-31T00:00:00Z",
		"2001:db8::/48 :127.0.0.4:sasl_bruteforce: 5 unknown recipients within 10m0s; until 2030-01-02T03:04:05Z",
	}
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(cfg.RbldnsdFile)
		body = string(b)
		if strings.Contains(body, "2001:db8::/48") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "$TTL") {
			lines = append(lines, l)
		}
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("rbldnsd file:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(cfg.RbldnsdFile), ".*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}
