package smtpcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testDNS answers on loopback: names in fail get SERVFAIL, names in
// silent get no answer at all (a dead server), names in a get A records,
// others NXDOMAIN. It counts the questions per name.
type testDNS struct {
	addr string
	mu   sync.Mutex
	asks map[string]int
}

func newTestDNS(t *testing.T, a map[string]string, fail, silent []string) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &testDNS{addr: pc.LocalAddr().String(), asks: map[string]int{}}
	in := func(list []string, n string) bool {
		for _, x := range list {
			if dns.Fqdn(x) == n {
				return true
			}
		}
		return false
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		name := strings.ToLower(r.Question[0].Name)
		z.mu.Lock()
		z.asks[name]++
		z.mu.Unlock()
		if in(silent, name) {
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		switch ip, ok := a[strings.TrimSuffix(name, ".")]; {
		case in(fail, name):
			m.Rcode = dns.RcodeServerFailure
		case ok && r.Question[0].Qtype == dns.TypeA:
			rr, _ := dns.NewRR(name + " 300 IN A " + ip)
			m.Answer = append(m.Answer, rr)
		case !ok:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *testDNS) asked(name string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.asks[dns.Fqdn(name)]
}

// A failed lookup (SERVFAIL, or no answer within the budget) is
// remembered briefly: while DNS is down each request must not wait the
// whole budget again.
func TestTemporaryFailuresAreRememberedBriefly(t *testing.T) {
	z := newTestDNS(t, nil, []string{"fail.example"}, []string{"silent.example"})
	// the client timeout equals the request budget, as in the policy server
	r := NewResolver(z.addr, 200*time.Millisecond, 5*time.Minute)
	for _, name := range []string{"fail.example", "silent.example"} {
		for range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_, err := r.LookupIP(ctx, name, false)
			cancel()
			if err == nil || errors.Is(err, ErrNotFound) {
				t.Fatalf("%s: err %v, want a temporary failure", name, err)
			}
		}
		if n := z.asked(name); n != 1 {
			t.Fatalf("%s asked %d times, want once (the failure remembered)", name, n)
		}
	}
	// remembered for tempFailTTL only
	dr := r.(*dnsResolver)
	dr.mu.Lock()
	for k, e := range dr.cache {
		if d := time.Until(e.expires); d > tempFailTTL || d < tempFailTTL-10*time.Second {
			t.Errorf("%v remembered for %v, want about %v", k, d, tempFailTTL)
		}
	}
	dr.mu.Unlock()
	// a caller that gives up says nothing about the DNS server
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.LookupIP(ctx, "canceled.example", false)
	dr.mu.Lock()
	_, cached := dr.cache[dnsKey{"canceled.example.", dns.TypeA}]
	dr.mu.Unlock()
	if cached {
		t.Fatal("a canceled lookup was remembered as a failure")
	}
}

// Only 127.0.0.0/24 (or the site's pattern) is a listing; a DNSBL's
// error answers (127.255.255.0/24, e.g. Spamhaus's "public resolver"
// 127.255.255.254) never are.
func TestDNSBLAnswers(t *testing.T) {
	for _, tc := range []struct {
		site, answer string
		listed       bool
	}{
		{"zen.example", "127.0.0.2", true},
		{"zen.example", "127.0.0.11", true},
		{"zen.example", "127.255.255.252", false},
		{"zen.example", "127.255.255.254", false},
		{"zen.example", "127.255.255.255", false},
		{"zen.example", "127.0.1.2", false},
		{"zen.example", "10.0.0.2", false},
		{"zen.example=127.0.0.[2..11]", "127.0.0.4", true},
		{"zen.example=127.0.0.[2..11]", "127.0.0.1", false},
		{"zen.example=127.0.0.[2..11]*3", "127.0.0.12", false},
		{"zen.example=127.0.[0;1].[2;4;10..12]", "127.0.1.11", true},
		{"zen.example=127.0.[0;1].[2;4;10..12]", "127.0.1.3", false},
		{"zen.example=127.255.255.[0..255]", "127.255.255.254", false}, // never, whatever the pattern
	} {
		site, err := ParseSite(tc.site)
		if err != nil {
			t.Fatalf("%s: %v", tc.site, err)
		}
		if got := site.Listed(netip.MustParseAddr(tc.answer)); got != tc.listed {
			t.Errorf("%s answering %s: listed %v, want %v", tc.site, tc.answer, got, tc.listed)
		}
	}
	for _, bad := range []string{"zen.example=127.0.0", "zen.example=127.0.0.[11..2]", "zen.example=127.0.0.256", "zen.example=127.0.0.[2..]"} {
		if _, err := ParseSite(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s, err := ParseSite("Zen.Example.=127.0.0.[2..11]*3"); err != nil || s.Zone != "zen.example" || s.Weight != 3 {
		t.Fatalf("zone and weight with a pattern: %+v %v", s, err)
	}
}

// DNSBLScore counts a site only for a listing answer.
func TestDNSBLScoreIgnoresErrorAnswers(t *testing.T) {
	z := newTestDNS(t, map[string]string{
		"2.0.0.192.listed.example": "127.0.0.2",
		"2.0.0.192.public.example": "127.255.255.254",
		"2.0.0.192.other.example":  "127.0.5.1",
	}, nil, nil)
	r := NewResolver(z.addr, time.Second, time.Minute)
	var sites []Site
	for _, s := range []string{"listed.example*2", "public.example*5", "other.example*7"} {
		site, err := ParseSite(s)
		if err != nil {
			t.Fatal(err)
		}
		sites = append(sites, site)
	}
	score, zones := DNSBLScore(context.Background(), r, sites, netip.MustParseAddr("192.0.0.2"), time.Second)
	if score != 2 || len(zones) != 1 || zones[0] != "listed.example" {
		t.Fatalf("score %d zones %v, want 2 [listed.example]", score, zones)
	}
}
