package smtpguard

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/event"
)

// zoneServer is a tiny DNS server: records by lower-case FQDN, names
// answering SERVFAIL, NXDOMAIN otherwise; it counts questions.
type zoneServer struct {
	addr string
	mu   sync.Mutex
	asks map[string]int // "name TYPE" → count
}

func newZoneServer(t *testing.T, records []string, servfail ...string) *zoneServer {
	t.Helper()
	rrs := map[string][]dns.RR{}
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatal(err)
		}
		rrs[strings.ToLower(rr.Header().Name)] = append(rrs[strings.ToLower(rr.Header().Name)], rr)
	}
	fail := map[string]bool{}
	for _, n := range servfail {
		fail[n] = true
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &zoneServer{addr: pc.LocalAddr().String(), asks: map[string]int{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		z.mu.Lock()
		z.asks[name+" "+dns.TypeToString[q.Qtype]]++
		z.mu.Unlock()
		switch {
		case fail[name]:
			m.Rcode = dns.RcodeServerFailure
		case rrs[name] == nil:
			m.Rcode = dns.RcodeNameError
		default:
			for _, rr := range rrs[name] {
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *zoneServer) asked(q string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.asks[q]
}

func (z *zoneServer) total() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for _, c := range z.asks {
		n += c
	}
	return n
}

func fcrdnsZone(t *testing.T) *zoneServer {
	return newZoneServer(t, []string{
		"1.0.0.127.in-addr.arpa. 60 IN PTR other.example.", // first name does not confirm,
		"1.0.0.127.in-addr.arpa. 60 IN PTR Good.Example.",  // the second does
		"other.example. 60 IN A 192.0.2.9",
		"good.example. 60 IN A 192.0.2.1",
		"good.example. 60 IN A 127.0.0.1",
		"2.0.0.127.in-addr.arpa. 60 IN PTR liar.example.", // forward does not match
		"liar.example. 60 IN A 192.0.2.1",
		// 3: no PTR (NXDOMAIN); 4: PTR SERVFAIL
		"5.0.0.127.in-addr.arpa. 60 IN PTR n1.example.", // six names: only the sixth matches
		"5.0.0.127.in-addr.arpa. 60 IN PTR n2.example.",
		"5.0.0.127.in-addr.arpa. 60 IN PTR n3.example.",
		"5.0.0.127.in-addr.arpa. 60 IN PTR n4.example.",
		"5.0.0.127.in-addr.arpa. 60 IN PTR n5.example.",
		"5.0.0.127.in-addr.arpa. 60 IN PTR n6.example.",
		"n6.example. 60 IN A 127.0.0.5",
		"6.0.0.127.in-addr.arpa. 60 IN PTR broken.example.", // forward SERVFAIL
		"7.0.0.127.in-addr.arpa. 60 IN PTR -bad.example.",   // not a host name
		"-bad.example. 60 IN A 127.0.0.7",
	}, "4.0.0.127.in-addr.arpa.", "broken.example.")
}

func TestFCrDNSReject(t *testing.T) {
	z := fcrdnsZone(t)
	h := newHarness(t, func(c *Config) { c.Resolver = z.addr; c.Checks.FCrDNS = Reject })
	for _, tc := range []struct {
		src  string
		code int
	}{
		{"127.0.0.1", 250},
		{"127.0.0.2", 450},
		{"127.0.0.3", 450},
		{"127.0.0.4", 250}, // DNS failure: let through
		{"127.0.0.5", 450}, // the confirming name is beyond the first 5
		{"127.0.0.6", 250}, // forward lookup failed: let through
		{"127.0.0.7", 450},
	} {
		codes, texts := attempt(t, h, tc.src, "a@remote.example", "alice@example.com")
		if codes[0] != tc.code {
			t.Errorf("%s: %q, want %d", tc.src, texts[0], tc.code)
			continue
		}
		if tc.code == 450 && texts[0] != "450 4.7.25 Client host rejected: cannot find your hostname, ["+tc.src+"]" {
			t.Errorf("%s: text %q", tc.src, texts[0])
		}
	}
	if z.asked("n6.example. A") != 0 {
		t.Error("looked up more than 5 PTR names")
	}
	// the confirmed name goes upstream
	h.up.mu.Lock()
	var names []string
	for _, x := range h.up.xclients {
		for _, f := range strings.Fields(x) {
			if strings.HasPrefix(f, "NAME=") {
				names = append(names, f)
			}
		}
	}
	h.up.mu.Unlock()
	// .4 and .6 were let through on a DNS failure: temporary, not "no name"
	if strings.Join(names, " ") != "NAME=good.example NAME=[TEMPUNAVAIL] NAME=[TEMPUNAVAIL]" {
		t.Errorf("XCLIENT names %q", names)
	}
	var rejected []string
	for _, ev := range h.ev.all() {
		if ev.Reason == event.ReasonClientNoRDNS {
			// a 450 that DNS may have caused: context, never evidence
			if ev.Abuse || ev.Code != 450 || ev.DSN != "4.7.25" || ev.Stage != "RCPT" || ev.To != "alice@example.com" {
				t.Errorf("event %+v", ev)
			}
			rejected = append(rejected, ev.Client.String())
		}
		if ev.Client.String() == "127.0.0.1" && ev.Kind == event.KindReceived && ev.ClientName != "good.example" {
			t.Errorf("ClientName %q", ev.ClientName)
		}
	}
	if strings.Join(rejected, ",") != "127.0.0.2,127.0.0.3,127.0.0.5,127.0.0.7" {
		t.Errorf("rejected %v", rejected)
	}
	if st := h.g.Stats(); st.FCrDNS != 4 {
		t.Errorf("Stats.FCrDNS = %d", st.FCrDNS)
	}
	// cached: a second session from 127.0.0.1 asks nothing
	before := z.asked("1.0.0.127.in-addr.arpa. PTR")
	if codes, _ := attempt(t, h, "127.0.0.1", "a@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatal("second session refused")
	}
	if after := z.asked("1.0.0.127.in-addr.arpa. PTR"); before != 1 || after != 1 {
		t.Errorf("PTR asked %d then %d times, want 1 (cache)", before, after)
	}
}

func TestFCrDNSWarnAndAllowlist(t *testing.T) {
	z := fcrdnsZone(t)
	h := newHarness(t, func(c *Config) { c.Resolver = z.addr; c.Checks.FCrDNS = Warn })
	if codes, texts := attempt(t, h, "127.0.0.3", "a@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatalf("warn mode refused: %q", texts[0])
	}
	ev := h.ev.find(t, event.KindReject, event.ReasonClientNoRDNS)
	if ev.Abuse || !strings.HasPrefix(ev.Detail, "warn: ") && !strings.Contains(ev.Raw, "warn: ") {
		t.Errorf("warn event %+v", ev)
	}

	h2 := newHarness(t, func(c *Config) {
		c.Resolver = z.addr
		c.Checks.FCrDNS = Reject
		c.Allowlist = []string{"127.0.0.3"}
	})
	if codes, texts := attempt(t, h2, "127.0.0.3", "a@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatalf("allowlisted client refused: %q", texts[0])
	}
}

func TestFCrDNSOff(t *testing.T) {
	z := fcrdnsZone(t)
	h := newHarness(t, func(c *Config) { c.Resolver = z.addr })
	if codes, _ := attempt(t, h, "127.0.0.3", "a@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatal("refused with fcrdns off")
	}
	if n := z.total(); n != 0 {
		t.Errorf("%d DNS questions with fcrdns off", n)
	}
	h.up.mu.Lock()
	defer h.up.mu.Unlock()
	if len(h.up.xclients) != 1 || !strings.Contains(h.up.xclients[0], "NAME=[UNAVAILABLE]") {
		t.Errorf("XCLIENT %q", h.up.xclients)
	}
}

func TestFCrDNSIPv6(t *testing.T) {
	z := newZoneServer(t, []string{
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 60 IN PTR v6.example.",
		"v6.example. 60 IN AAAA 2001:db8::1",
	})
	r := newDNSResolver(z.addr, 0, 0)
	if n, err := fcrdns(t.Context(), r, mustAddr("2001:db8::1")); err != nil || n != "v6.example" {
		t.Fatalf("got %q %v", n, err)
	}
	if _, err := fcrdns(t.Context(), r, mustAddr("2001:db8::2")); err != ErrNotFound {
		t.Fatalf("no PTR: %v", err)
	}
}

func TestFCrDNSConfig(t *testing.T) {
	c := testConfig("127.0.0.1:1")
	c.Checks.FCrDNS = "maybe"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "guard.checks.fcrdns") {
		t.Errorf("Validate: %v", err)
	}
	if DefaultConfig().Checks.FCrDNS != Off {
		t.Error("fcrdns is not off by default")
	}
}

// A real MTA without a PTR that sends to many recipients gets its 450s but
// is neither tarpitted to "too many errors" nor banned by the detectors.
func TestFCrDNSRejectIsNotEvidence(t *testing.T) {
	z := fcrdnsZone(t)
	h := newHarness(t, func(c *Config) {
		c.Resolver = z.addr
		c.Checks.FCrDNS = Reject
		c.Limits.SoftErrorLimit = 2
		c.Limits.HardErrorLimit = 3
	})
	c := dialFrom(t, h.addr, "127.0.0.3") // no PTR
	c.expect(220)
	c.cmd("EHLO mta.remote.example", 250)
	c.cmd("MAIL FROM:<a@remote.example>", 250)
	for i := range 8 {
		c.cmd("RCPT TO:<user"+string(rune('a'+i))+"@example.com>", 450)
	}
	c.cmd("QUIT", 221)
	if why, banned := h.bl.Banned(mustAddr("127.0.0.3")); banned {
		t.Fatalf("banned for FCrDNS 450s: %q", why)
	}
	if h.ev.has(event.KindTooManyErrors) {
		t.Error("FCrDNS 450s counted toward the error limit")
	}
}
