package dnsbl

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/tsig"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=" // base64, 32 bytes

func testConfig() Config {
	c := DefaultConfig()
	c.Enabled = true
	c.Zone = "bl.example"
	c.Listen = "127.0.0.1:0"
	c.RateLimit.QPS = 0
	c.NotifyDelay = Duration(10 * time.Millisecond)
	return c
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestPublisher(t testing.TB, cfg Config, ck *clock) *Publisher {
	t.Helper()
	// ban.max_prefix_v4 /22: regions are /16s, so /23 bans exist
	p, err := New(cfg, Options{Now: ck.now, MaxPrefixV4: 22})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func mkBan(prefix, detector string, until time.Time) ban.Ban {
	return ban.Ban{Prefix: netip.MustParsePrefix(prefix), Detector: detector, Reason: "5 unknown recipients within 10m0s", Until: until}
}

func TestQueryNameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		want  string
		full  bool
		valid bool
	}{
		{"2.0.0.127.bl.example.", "127.0.0.2/32", true, true},
		{"99.2.0.192.BL.Example.", "192.0.2.99/32", true, true},
		{"3.2.1.bl.example.", "1.2.3.0/24", false, true},
		{"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.example.", "::2/128", true, true},
		{"b.a.9.8.7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example.", "2001:db8::4567:89ab/128", true, true},
		{"0.0.0.0.8.B.D.0.1.0.0.2.bl.example.", "2001:db8::/48", false, true},
		{"256.2.0.192.bl.example.", "", false, false},
		{"01.2.0.192.bl.example.", "", false, false},
		{"x.2.0.192.bl.example.", "", false, false},
		{"2.0.192.other.example.", "", false, false},
		{"bl.example.", "", false, false},
		{"1.2.3.4.g.bl.example.", "", false, false}, // neither form
		{"..bl.example.", "", false, false},
	} {
		p, full, ok := ParseQueryName(tc.name, "bl.example.")
		if ok != tc.valid || (ok && (p.String() != tc.want || full != tc.full)) {
			t.Errorf("ParseQueryName(%q) = %v %v %v, want %s %v %v", tc.name, p, full, ok, tc.want, tc.full, tc.valid)
			continue
		}
		if ok && full {
			if got := queryName(p.Addr(), "bl.example."); !strings.EqualFold(got, tc.name) {
				t.Errorf("queryName(%s) = %q, want %q", p.Addr(), got, tc.name)
			}
		}
	}
}

func FuzzParseQueryName(f *testing.F) {
	for _, s := range []string{"2.0.0.127.bl.example.", "3.2.1.bl.example.", "0.0.0.0.8.b.d.0.1.0.0.2.bl.example.", "a.b.bl.example.", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, full, ok := ParseQueryName(name, "bl.example.")
		if !ok {
			return
		}
		if !p.IsValid() || p.Masked() != p {
			t.Fatalf("%q: not a canonical prefix: %v", name, p)
		}
		// The name of what was parsed is the name, up to case.
		back := nodeName(p, "bl.example.")
		if !strings.EqualFold(back, name) {
			t.Fatalf("%q parsed to %s, which is named %q", name, p, back)
		}
		if full != (p.Bits() == p.Addr().BitLen()) {
			t.Fatalf("%q: full=%v for %s", name, full, p)
		}
	})
}

// ask sends q to the publisher's handler directly (no sockets).
func ask(t testing.TB, p *Publisher, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	w := &recorder{remote: udpAddr("192.0.2.53")}
	p.ServeDNS(w, m)
	if len(w.msgs) != 1 {
		t.Fatalf("%s %s: %d replies", name, dns.TypeToString[qtype], len(w.msgs))
	}
	return w.msgs[0]
}

func TestAnswers(t *testing.T) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	p := newTestPublisher(t, testConfig(), ck)
	until := ck.t.Add(time.Hour)
	ctx := context.Background()
	for _, b := range []ban.Ban{
		mkBan("192.0.2.7/32", "dictionary", until),
		mkBan("198.51.100.0/24", "manual", until),
		mkBan("198.51.100.9/32", "sasl_bruteforce", until),
		mkBan("203.0.112.0/23", "pregreet", until),
		mkBan("2001:db8:1::/48", "dictionary", until),
		mkBan("2001:db8:2::/52", "error_burst", until), // off a nibble? no: 52 is on one
		mkBan("2001:db8:3::/49", "error_burst", until),
		mkBan("192.0.2.99/32", "peer:mx2", until),
		{Prefix: netip.MustParsePrefix("192.0.2.98/32"), Detector: "dictionary", Until: until, DryRun: true},
	} {
		if err := p.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	q := func(a string) string { return queryName(netip.MustParseAddr(a), "bl.example.") }
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		want  string // answer's first rdata, "" for none
	}{
		{q("127.0.0.2"), dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
		{q("127.0.0.2"), dns.TypeTXT, dns.RcodeSuccess, "test: RFC 5782 test entry; until 9999-12-31T00:00:00Z"},
		{q("127.0.0.1"), dns.TypeA, dns.RcodeNameError, ""},
		{q("::2"), dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
		{q("::1"), dns.TypeA, dns.RcodeNameError, ""},
		{q("192.0.2.7"), dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
		{q("192.0.2.7"), dns.TypeTXT, dns.RcodeSuccess, "dictionary: 5 unknown recipients within 10m0s; until 2026-12-01T13:00:00Z"},
		{q("192.0.2.7"), dns.TypeAAAA, dns.RcodeSuccess, ""},
		{q("192.0.2.8"), dns.TypeA, dns.RcodeNameError, ""},
		{q("198.51.100.200"), dns.TypeA, dns.RcodeSuccess, "127.0.0.10"}, // inside the /24
		{q("198.51.100.9"), dns.TypeA, dns.RcodeSuccess, "127.0.0.4"},    // longest prefix
		{q("203.0.113.250"), dns.TypeA, dns.RcodeSuccess, "127.0.0.3"},   // inside the /23
		{q("2001:db8:1:ffff::1"), dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
		{q("2001:db8:2:0fff::1"), dns.TypeA, dns.RcodeSuccess, "127.0.0.3"},
		{q("2001:db8:2:1000::1"), dns.TypeA, dns.RcodeNameError, ""},
		{q("2001:db8:3:7fff::1"), dns.TypeA, dns.RcodeSuccess, "127.0.0.3"},
		{q("2001:db8:3:8000::1"), dns.TypeA, dns.RcodeNameError, ""},
		{q("192.0.2.99"), dns.TypeA, dns.RcodeNameError, ""},        // peer: never published
		{q("192.0.2.98"), dns.TypeA, dns.RcodeNameError, ""},        // dry run: never published
		{"2.0.192.bl.example.", dns.TypeA, dns.RcodeSuccess, ""},    // a node above a listing
		{"100.51.198.bl.example.", dns.TypeA, dns.RcodeSuccess, ""}, // the /24 itself exists
		{"bl.example.", dns.TypeSOA, dns.RcodeSuccess, "ns.bl.example."},
		{"bl.example.", dns.TypeNS, dns.RcodeSuccess, "ns.bl.example."},
		{"bl.example.", dns.TypeA, dns.RcodeSuccess, ""},
		{"www.bl.example.", dns.TypeA, dns.RcodeNameError, ""},
		{"example.com.", dns.TypeA, dns.RcodeRefused, ""},
		{q("192.0.2.7"), dns.TypeANY, dns.RcodeSuccess, "127.0.0.2"},
	} {
		m := ask(t, p, tc.name, tc.qtype)
		got := ""
		if len(m.Answer) > 0 {
			switch rr := m.Answer[0].(type) {
			case *dns.A:
				got = rr.A.String()
			case *dns.TXT:
				got = strings.Join(rr.Txt, "")
			case *dns.SOA:
				got = rr.Ns
			case *dns.NS:
				got = rr.Ns
			}
		}
		if m.Rcode != tc.rcode || got != tc.want {
			t.Errorf("%s %s: rcode %s answer %q, want %s %q", tc.name, dns.TypeToString[tc.qtype],
				dns.RcodeToString[m.Rcode], got, dns.RcodeToString[tc.rcode], tc.want)
		}
		if tc.rcode == dns.RcodeNameError && (len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeSOA) {
			t.Errorf("%s: NXDOMAIN without the SOA in authority: %v", tc.name, m.Ns)
		}
		if tc.rcode != dns.RcodeRefused && !m.Authoritative {
			t.Errorf("%s: answer not authoritative", tc.name)
		}
	}
	if m := ask(t, p, q("192.0.2.7"), dns.TypeANY); len(m.Answer) != 2 {
		t.Errorf("ANY: %d records, want A and TXT", len(m.Answer))
	}
}

func TestShortReasonHidesAddresses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"5 unknown recipients within 10m0s", "5 unknown recipients within 10m0s"},
		{"complaint from 192.0.2.1; see 2001:db8::1, and (10.0.0.0/8)", "complaint from [address], see [address], and ([address])"},
		{"quote \" and back\\slash\n", "quote ' and back'slash"},
	} {
		if got := shortReason(tc.in); got != tc.want {
			t.Errorf("shortReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := shortReason(strings.Repeat("x", 500)); len(got) != maxReasonLen {
		t.Errorf("long reason kept %d bytes", len(got))
	}
}

func TestExpiryAndSerials(t *testing.T) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	p := newTestPublisher(t, testConfig(), ck)
	ctx := context.Background()
	s0 := p.Serial()
	if s0 < clockSerial(ck.t) {
		t.Fatalf("first serial %d below the clock %d", s0, clockSerial(ck.t))
	}
	b := mkBan("192.0.2.7/32", "dictionary", ck.t.Add(time.Minute))
	p.Apply(ctx, b)
	s1 := p.Serial()
	p.Apply(ctx, b) // the same listing: no change
	if p.Serial() != s1 || !serialLess(s0, s1) {
		t.Fatalf("serials %d → %d → %d", s0, s1, p.Serial())
	}
	b.Until = b.Until.Add(time.Minute) // extension: TXT changes
	p.Apply(ctx, b)
	s2 := p.Serial()
	ck.t = ck.t.Add(3 * time.Minute)
	p.expireDue()
	s3 := p.Serial()
	if !serialLess(s1, s2) || !serialLess(s2, s3) {
		t.Fatalf("serials %d %d %d not increasing", s1, s2, s3)
	}
	if m := ask(t, p, queryName(b.Prefix.Addr(), p.zone), dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("expired listing answers %s", dns.RcodeToString[m.Rcode])
	}
	p.Revoke(ctx, b.Prefix) // the Manager's sweep after our expiry: nothing to do
	if p.Serial() != s3 {
		t.Errorf("revoke of an expired listing changed the serial")
	}
}

func TestSerialMonotonicAcrossRestarts(t *testing.T) {
	path := t.TempDir() + "/serial"
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	k, s, err := openSerial(path, now)
	if err != nil {
		t.Fatal(err)
	}
	// Far more changes than seconds pass: the serial runs ahead of the clock.
	for range 2500 {
		if s, err = k.next(s, now); err != nil {
			t.Fatal(err)
		}
	}
	// A restart (even one after a crash, the last serial never saved as
	// such) starts above every serial handed out.
	_, s2, err := openSerial(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if !serialLess(s, s2) {
		t.Fatalf("after restart serial %d, before %d", s2, s)
	}
	// Without a state file the clock alone is the floor.
	_, s3, _ := openSerial("", now.Add(time.Hour))
	if s3 != clockSerial(now.Add(time.Hour)) {
		t.Fatalf("serial without a file = %d", s3)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string // substring of the error, "" for none
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.Zone = "" }, "zone: required"},
		{func(c *Config) { c.Listen = "53" }, "listen:"},
		{func(c *Config) { c.Codes = map[string]string{"dictionary": "10.0.0.2"} }, "codes.dictionary:"},
		{func(c *Config) { c.Codes = map[string]string{"manual": "127.0.0.1"} }, "codes.manual:"},
		{func(c *Config) { c.Secondaries = []string{"ns2.example"} }, "secondaries[0]:"},
		{func(c *Config) { c.Secondaries = []string{"192.0.2.2"} }, "tsig.name: missing"},
		{func(c *Config) {
			c.Secondaries = []string{"192.0.2.2"}
			c.TSIG = tsig.Key{Name: "k", Algorithm: "hmac-md5", Secret: testSecret}
		}, "tsig.algorithm:"},
		{func(c *Config) {
			c.Secondaries = []string{"192.0.2.2:5300"}
			c.TSIG = tsig.Key{Name: "k", Algorithm: "hmac-sha256", Secret: "bm9wZQ=="}
		}, "tsig.secret:"},
		{func(c *Config) { c.Detectors = []string{"peer:mx2"} }, "detectors[0]:"},
		{func(c *Config) { c.SOA.Refresh = 0 }, "soa.refresh:"},
		{func(c *Config) { c.TTL = 0 }, "ttl:"},
	} {
		c := testConfig()
		tc.edit(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("unexpected error: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("error %v, want one containing %q", err, tc.want)
		}
	}
}
