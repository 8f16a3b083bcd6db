package policy

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/testclock"
)

func TestProtocolTable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		bans  []string // prefixes banned
		dry   bool
		req   string
		want  string // prefix of the action
		abuse bool   // the event the answer emitted (if any) is evidence
		kind  event.Kind
	}{
		{name: "clean client", req: req(), want: "DUNNO"},
		{name: "unknown attributes ignored", req: req("ccert_subject", "x", "policy_context", "y", "unknown_new_attr", "z=z"), want: "DUNNO"},
		{name: "banned address", bans: []string{"192.0.2.10/32"}, req: req(),
			want: "REJECT mxguard: client [192.0.2.10] is blocked", kind: event.KindReject},
		{name: "banned prefix, longest match", bans: []string{"192.0.2.0/24"}, req: req(),
			want: "REJECT mxguard: client [192.0.2.10] is blocked", kind: event.KindReject},
		{name: "banned, IPv6", bans: []string{"2001:db8::/64"}, req: req("client_address", "2001:db8::5"),
			want: "REJECT mxguard: client [2001:db8::5] is blocked", kind: event.KindReject},
		{name: "a dry-run ban is not enforced", bans: []string{"192.0.2.10/32"}, dry: true, req: req(), want: "DUNNO"},
		{name: "banned, defer", mod: func(c *Config) { c.Checks.Blocklist = Defer }, bans: []string{"192.0.2.10/32"}, req: req(),
			want: "DEFER_IF_PERMIT mxguard: client", kind: event.KindReject},
		{name: "banned, disconnect", mod: func(c *Config) { c.Checks.Blocklist = Disconnect }, bans: []string{"192.0.2.10/32"}, req: req(),
			want: "421 4.7.0 mxguard: client", kind: event.KindReject},
		{name: "banned, warn", mod: func(c *Config) { c.Checks.Blocklist = Warn }, bans: []string{"192.0.2.10/32"}, req: req(),
			want: "WARN mxguard: client", kind: event.KindRejectWarning},
		{name: "banned, off", mod: func(c *Config) { c.Checks.Blocklist = Off }, bans: []string{"192.0.2.10/32"}, req: req(), want: "DUNNO"},
		{name: "banned but allowlisted", mod: func(c *Config) { c.Allowlist = []string{"192.0.2.0/28"} }, bans: []string{"192.0.2.10/32"}, req: req(), want: "DUNNO"},
		{name: "banned at CONNECT", bans: []string{"192.0.2.10/32"}, req: req("protocol_state", "CONNECT", "helo_name", ""),
			want: "REJECT mxguard: client", kind: event.KindReject},
		{name: "HELO localhost", req: req("helo_name", "localhost"), want: "REJECT mxguard: HELO name <localhost> denied", abuse: true, kind: event.KindReject},
		{name: "HELO our hostname", req: req("helo_name", "MX.ours.example."), want: "REJECT mxguard: HELO name <MX.ours.example.> denied", abuse: true, kind: event.KindReject},
		{name: "HELO the server's address", req: req("helo_name", "[198.51.100.1]"), want: "REJECT mxguard: HELO name <[198.51.100.1]> denied", abuse: true, kind: event.KindReject},
		{name: "HELO not FQDN", req: req("helo_name", "desktop"), want: "REJECT mxguard: HELO name <desktop> is not a fully-qualified hostname", abuse: true, kind: event.KindReject},
		{name: "HELO bare IP", req: req("helo_name", "192.0.2.10"), want: "REJECT mxguard: HELO name <192.0.2.10> is not", abuse: true, kind: event.KindReject},
		{name: "HELO invalid", req: req("helo_name", "a b!"), want: "REJECT mxguard: HELO name <a b!> is invalid", abuse: true, kind: event.KindReject},
		{name: "HELO with control bytes is shown safely", req: req("helo_name", "bad\x01name"), want: `REJECT mxguard: HELO name <bad\x01name> is invalid`, abuse: true, kind: event.KindReject},
		{name: "HELO literal fine", req: req("helo_name", "[192.0.2.10]"), want: "DUNNO"},
		{name: "HELO defer", mod: func(c *Config) { c.Checks.HeloFQDN = Defer }, req: req("helo_name", "desktop"),
			want: "DEFER_IF_PERMIT mxguard: HELO", abuse: true, kind: event.KindReject},
		{name: "HELO warn", mod: func(c *Config) { c.Checks.HeloFQDN = Warn }, req: req("helo_name", "desktop"),
			want: "WARN mxguard: HELO", kind: event.KindRejectWarning},
		{name: "HELO off", mod: func(c *Config) { c.Checks.HeloFQDN, c.Checks.HeloDeny = Off, Off }, req: req("helo_name", "localhost"), want: "DUNNO"},
		{name: "HELO not judged at CONNECT", req: req("protocol_state", "CONNECT", "helo_name", "localhost"), want: "DUNNO"},
		{name: "HELO judged at EHLO", req: req("protocol_state", "EHLO", "helo_name", "localhost"), want: "REJECT mxguard: HELO", abuse: true, kind: event.KindReject},
		{name: "no HELO yet", req: req("helo_name", ""), want: "DUNNO"},
		{name: "unparsable client address", req: req("client_address", "not-an-ip"), want: "DUNNO"},
		{name: "client address unknown", req: req("client_address", "unknown"), bans: []string{"0.0.0.0/0"}, want: "DUNNO"},
		{name: "missing client address", req: req("client_address", "\x7f"), want: "DUNNO"},
		{name: "END-OF-MESSAGE, clean", req: req("protocol_state", "END-OF-MESSAGE", "recipient_count", "3"), want: "DUNNO"},
		{name: "CRLF line ends tolerated", req: strings.ReplaceAll(req(), "\n", "\r\n"), want: "DUNNO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			bl := &memBlocklist{}
			for _, p := range tc.bans {
				bl.ban(p, tc.dry)
			}
			ev := &events{}
			_, path := start(t, cfg, Deps{Blocklist: bl, Sink: ev.sink})
			c := dial(t, path)
			got, err := c.ask(tc.req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("action %q, want %q...", got, tc.want)
			}
			c.flushed()
			evs := ev.all()
			if tc.kind == event.KindNone {
				if len(evs) != 0 {
					t.Fatalf("events %+v, want none", evs)
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1: %+v", len(evs), evs)
			}
			e := evs[0]
			if e.Service != Service || e.Kind != tc.kind || e.Abuse != tc.abuse || !e.Client.IsValid() || e.Raw == "" {
				t.Fatalf("event %+v, want service %s kind %v abuse %v", e, Service, tc.kind, tc.abuse)
			}
		})
	}
}

// One connection carries many requests, as smtpd keeps it; many
// connections run at once.
func TestPersistentAndConcurrentConnections(t *testing.T) {
	bl := &memBlocklist{}
	bl.ban("192.0.2.0/24", false)
	_, path := start(t, testConfig(t), Deps{Blocklist: bl})
	const conns, reqs = 20, 50
	errs := make(chan error, conns)
	for i := range conns {
		go func() {
			c := dial(t, path)
			for j := range reqs {
				ip, want := fmt.Sprintf("203.0.113.%d", j), "DUNNO"
				if (i+j)%2 == 0 {
					ip, want = fmt.Sprintf("192.0.2.%d", j), "REJECT mxguard: client"
				}
				got, err := c.ask(req("client_address", ip))
				if err != nil || !strings.HasPrefix(got, want) {
					errs <- fmt.Errorf("conn %d req %d: %q %v, want %q", i, j, got, err, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestGreylisting(t *testing.T) {
	clk := testclock.New()
	cfg := testConfig(t)
	cfg.Greylist.Enabled = true
	cfg.Greylist.DB = t.TempDir() + "/greylist.db"
	cfg.Greylist.AutoAllowlist = 2
	ev := &events{}
	s, path := start(t, cfg, Deps{Sink: ev.sink, Now: clk.Now})
	c := dial(t, path)
	msg := func(ip, from, to, inst string) string {
		return c.mustAsk(req("client_address", ip, "sender", from, "recipient", to, "instance", inst))
	}
	if a := msg("192.0.2.10", "list-1001@lists.example", "bob@example.com", "i1"); !strings.HasPrefix(a, "DEFER_IF_PERMIT mxguard: Greylisted, see ") {
		t.Fatalf("first attempt: %q", a)
	}
	c.flushed()
	if e := ev.all(); len(e) != 1 || e[0].Reason != event.ReasonGreylisted || e[0].Abuse {
		t.Fatalf("greylist event %+v: want one, reason greylisted, not evidence", e)
	}
	clk.Add(time.Minute)
	if a := msg("192.0.2.10", "list-1001@lists.example", "bob@example.com", "i2"); !strings.Contains(a, "try again in 240 s") {
		t.Fatalf("early retry: %q", a)
	}
	clk.Add(5 * time.Minute)
	// another host of the /24, a VERP sender of the same list: the same triplet
	a := msg("192.0.2.77", "list-1002@lists.example", "bob@example.com", "i3")
	if !strings.HasPrefix(a, "PREPEND X-Greylist: delayed 360 seconds by mxguard at mx.ours.example; ") {
		t.Fatalf("retry after delay: %q", a)
	}
	if a := msg("192.0.2.10", "list-1003@lists.example", "bob@example.com", "i4"); a != "DUNNO" {
		t.Fatalf("passed triplet: %q", a)
	}
	// a second retried triplet (another message): the /24 has now
	// passed auto_allowlist (2) times and skips greylisting
	msg("192.0.2.10", "x@remote.example", "carol@example.com", "i5")
	clk.Add(6 * time.Minute)
	if a := msg("192.0.2.10", "x@remote.example", "carol@example.com", "i6"); !strings.HasPrefix(a, "PREPEND") {
		t.Fatalf("second retry: %q", a)
	}
	if a := msg("192.0.2.200", "brand-new@elsewhere.example", "erin@example.com", "i8"); a != "DUNNO" {
		t.Fatalf("after %d passes the /24 is auto-allowlisted: %q", cfg.Greylist.AutoAllowlist, a)
	}
	if n := s.Stats().Greylisted; n != 3 { // i1 new, i2 early, i5 new
		t.Fatalf("Greylisted = %d, want 3", n)
	}
	// allowlisted clients and other states are not greylisted
	if a := msg("198.51.100.9", "z@z.example", "bob@example.com", "i9"); !strings.HasPrefix(a, "DEFER_IF_PERMIT") {
		t.Fatalf("other network: %q", a)
	}
	if a := c.mustAsk(req("protocol_state", "DATA", "client_address", "198.51.100.20")); a != "DUNNO" {
		t.Fatalf("DATA: %q", a)
	}
}

func TestGreylistCreditOncePerMessage(t *testing.T) {
	clk := testclock.New()
	cfg := testConfig(t)
	cfg.Greylist.Enabled = true
	cfg.Greylist.DB = t.TempDir() + "/greylist.db"
	cfg.Greylist.AutoAllowlist = 2
	_, path := start(t, cfg, Deps{Now: clk.Now})
	c := dial(t, path)
	for _, to := range []string{"a@example.com", "b@example.com"} {
		c.mustAsk(req("recipient", to, "instance", "m1"))
	}
	clk.Add(6 * time.Minute)
	for _, to := range []string{"a@example.com", "b@example.com"} { // one message, two recipients
		if a := c.mustAsk(req("recipient", to, "instance", "m2")); !strings.HasPrefix(a, "PREPEND") {
			t.Fatalf("retry to %s: %q", to, a)
		}
	}
	if a := c.mustAsk(req("sender", "other@remote.example", "instance", "m3")); !strings.HasPrefix(a, "DEFER_IF_PERMIT") {
		t.Fatalf("one message with two recipients allowlisted the network (auto_allowlist 2): %q", a)
	}
}

func TestRateLimit(t *testing.T) {
	clk := testclock.New()
	cfg := testConfig(t)
	cfg.RateLimit.Limits = []RateLimit{{Count: 3, Window: Duration(time.Hour)}, {Count: 5, Window: Duration(24 * time.Hour)}}
	ev := &events{}
	s, path := start(t, cfg, Deps{Sink: ev.sink, Now: clk.Now})
	c := dial(t, path)
	for i := range 3 {
		if a := c.mustAsk(req("recipient", fmt.Sprintf("r%d@example.com", i))); a != "DUNNO" {
			t.Fatalf("rcpt %d: %q", i, a)
		}
	}
	a := c.mustAsk(req("recipient", "r4@example.com"))
	if a != "DEFER_IF_PERMIT mxguard: rate limit of 3 per 1h reached" {
		t.Fatalf("4th rcpt: %q", a)
	}
	c.flushed()
	if e := ev.all(); len(e) != 1 || e[0].Kind != event.KindRateLimit || e[0].Abuse || e[0].Detail != "from:alice@remote.example" {
		t.Fatalf("events %+v", e)
	}
	// the same client with a SASL login counts apart (sasl_username first)
	if a := c.mustAsk(req("sasl_username", "carol")); a != "DUNNO" {
		t.Fatalf("sasl user: %q", a)
	}
	// two hours later the hourly window has room (the sliding-window
	// counter weighs the previous hour linearly, so just after one hour
	// it would still count most of it); the daily limit of 5 then stops it
	clk.Add(2 * time.Hour)
	for i := range 2 {
		if a := c.mustAsk(req("recipient", fmt.Sprintf("s%d@example.com", i))); a != "DUNNO" {
			t.Fatalf("next hour rcpt %d: %q", i, a)
		}
	}
	if a := c.mustAsk(req()); !strings.Contains(a, "5 per 1d") && !strings.Contains(a, "5 per 24h") {
		t.Fatalf("daily limit: %q", a)
	}
	if s.Stats().RateLimited != 2 {
		t.Fatalf("RateLimited = %d", s.Stats().RateLimited)
	}
}

func TestRateLimitEndOfMessage(t *testing.T) {
	clk := testclock.New()
	cfg := testConfig(t)
	cfg.RateLimit.Limits = []RateLimit{{Count: 10, Window: Duration(time.Hour)}}
	cfg.RateLimit.CountAt = "end_of_message"
	_, path := start(t, cfg, Deps{Now: clk.Now})
	c := dial(t, path)
	if a := c.mustAsk(req("protocol_state", "END-OF-MESSAGE", "recipient_count", "10")); a != "DUNNO" {
		t.Fatalf("end of message: %q", a)
	}
	if a := c.mustAsk(req()); !strings.HasPrefix(a, "DEFER_IF_PERMIT mxguard: rate limit") {
		t.Fatalf("after 10 recipients counted: %q", a)
	}
}

// The rate limiter keeps at most max_keys keys, the least recently used
// going first.
func TestRateLimiterBounded(t *testing.T) {
	rl := newRateLimiter([]RateLimit{{Count: 1, Window: Duration(time.Hour)}}, 100)
	now := time.Now()
	rl.add("keep", 1, now)
	for i := range 1000 {
		rl.add(fmt.Sprintf("k%d", i), 1, now)
		if i%50 == 0 {
			rl.add("keep", 0, now) // used lately
		}
	}
	if n := rl.keys(); n != 100 {
		t.Fatalf("%d keys, want 100", n)
	}
	if _, over := rl.over("keep", 1, now); !over {
		t.Fatal("a recently used key was evicted")
	}
	if _, over := rl.over("k0", 1, now); over {
		t.Fatal("the oldest key is still counted")
	}
}

// An allowlisted client skips greylisting (and every other check) but
// not the rate limits: an allowlisted relay can still send too much.
func TestAllowlistedClient(t *testing.T) {
	clk := testclock.New()
	cfg := testConfig(t)
	cfg.Allowlist = []string{"192.0.2.0/28"}
	cfg.Greylist.Enabled = true
	cfg.Greylist.DB = t.TempDir() + "/greylist.db"
	cfg.RateLimit.Limits = []RateLimit{{Count: 2, Window: Duration(time.Hour)}}
	bl := &memBlocklist{}
	bl.ban("192.0.2.10/32", false)
	_, path := start(t, cfg, Deps{Now: clk.Now, Blocklist: bl})
	c := dial(t, path)
	for i, want := range []string{"DUNNO", "DUNNO", "DEFER_IF_PERMIT mxguard: rate limit of 2 per 1h reached"} {
		// banned, HELO localhost and a new triplet: all skipped for the allowlisted client
		a := c.mustAsk(req("helo_name", "localhost", "recipient", fmt.Sprintf("r%d@example.com", i)))
		if a != want {
			t.Fatalf("allowlisted rcpt %d: %q, want %q", i, a, want)
		}
	}
	// the same new triplet from outside the allowlist is greylisted
	if a := c.mustAsk(req("client_address", "192.0.2.200", "sender", "new@remote.example")); !strings.HasPrefix(a, "DEFER_IF_PERMIT mxguard: Greylisted") {
		t.Fatalf("client outside the allowlist: %q", a)
	}
}

// A recipient deferred by greylisting does not count toward the rate
// limit: it comes back and counts then.
func TestGreylistedRecipientsDoNotCount(t *testing.T) {
	clk := testclock.New()
	cfg := testConfig(t)
	cfg.Greylist.Enabled = true
	cfg.Greylist.DB = t.TempDir() + "/greylist.db"
	cfg.RateLimit.Limits = []RateLimit{{Count: 2, Window: Duration(time.Hour)}}
	_, path := start(t, cfg, Deps{Now: clk.Now})
	c := dial(t, path)
	for i := range 2 {
		for range 2 { // the first try and an early retry: both greylisted
			if a := c.mustAsk(req("recipient", fmt.Sprintf("r%d@example.com", i))); !strings.HasPrefix(a, "DEFER_IF_PERMIT mxguard: Greylisted") {
				t.Fatalf("first try %d: %q", i, a)
			}
		}
	}
	clk.Add(10 * time.Minute)
	for i := range 2 {
		if a := c.mustAsk(req("recipient", fmt.Sprintf("r%d@example.com", i))); !strings.HasPrefix(a, "PREPEND X-Greylist") {
			t.Fatalf("retry %d after the delay: %q (greylisted tries were counted)", i, a)
		}
	}
	if a := c.mustAsk(req("recipient", "r0@example.com")); a != "DEFER_IF_PERMIT mxguard: rate limit of 2 per 1h reached" {
		t.Fatalf("third delivered recipient: %q", a)
	}
}

// Check and count are one step: concurrent requests never pass more
// than the limit.
func TestRateLimiterTryAddIsAtomic(t *testing.T) {
	r := newRateLimiter([]RateLimit{{Count: 100, Window: Duration(time.Hour)}}, 10)
	now := time.Now()
	var passed atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 50 {
				if _, over := r.tryAdd("from:a@example", 1, now); !over {
					passed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if passed.Load() != 100 {
		t.Fatalf("%d passed, want exactly 100", passed.Load())
	}
	r.refund("from:a@example", 1, now, now)
	if _, over := r.tryAdd("from:a@example", 1, now); over {
		t.Fatal("a refunded slot is not free again")
	}
	if _, over := r.tryAdd("from:a@example", 1, now); !over {
		t.Fatal("over the limit after the refunded slot was used")
	}
}

// Names to deny match whatever their case and trailing dot, in the
// config and in the HELO.
func TestHeloDenyNamesNormalised(t *testing.T) {
	cfg := testConfig(t)
	cfg.Hostname = "MX.Ours.Example."
	cfg.Checks.HeloDenyNames = []string{"Evil.Example."}
	_, path := start(t, cfg, Deps{})
	c := dial(t, path)
	for _, helo := range []string{"evil.example", "EVIL.example.", "mx.ours.example", "mx.ours.example."} {
		if a := c.mustAsk(req("helo_name", helo)); !strings.HasPrefix(a, "REJECT mxguard: HELO name <"+helo+"> denied") {
			t.Errorf("HELO %s: %q", helo, a)
		}
	}
	if a := c.mustAsk(req("helo_name", "good.example")); a != "DUNNO" {
		t.Errorf("HELO good.example: %q", a)
	}
}
