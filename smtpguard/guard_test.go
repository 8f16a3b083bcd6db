package smtpguard

import (
	"context"
	"net"
	"net/smtp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
)

// testMsg is a message; testWire is it dot-stuffed as a client sends it.
const (
	testMsg  = "Subject: hi\r\n\r\nhello\r\n.dot line\r\n"
	testWire = "Subject: hi\r\n\r\nhello\r\n..dot line\r\n"
)

// sendMail sends one message with net/smtp and a proper HELO name.
func sendMail(t *testing.T, addr, from string, to []string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(testMsg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func TestGoodClientEHLOPipelining(t *testing.T) {
	h := newHarness(t, nil)
	c := dial(t, h.addr)
	c.expect(220)
	ehlo := c.cmd("EHLO client.example.org", 250)
	if !strings.Contains(ehlo, "PIPELINING") || strings.Contains(ehlo, "XCLIENT") || strings.Contains(ehlo, "CHUNKING") {
		t.Fatalf("EHLO reply: %q", ehlo)
	}
	// MAIL, RCPT, RCPT, DATA in one write: allowed after EHLO (RFC 2920).
	c.send("MAIL FROM:<sender@example.net>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	if _, text := c.reply(); !strings.Contains(text, "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown") {
		t.Fatalf("upstream 550 not relayed unchanged: %q", text)
	}
	c.expect(354)
	c.send(testWire + ".\r\n")
	if text := c.expect(250); !strings.Contains(text, "queued as FAKE1") {
		t.Fatalf("final reply %q", text)
	}
	c.cmd("QUIT", 221)

	msgs := h.up.messages()
	if len(msgs) != 1 {
		t.Fatalf("upstream got %d messages", len(msgs))
	}
	m := msgs[0]
	if !strings.Contains(m.xclient, "ADDR=127.0.0.1") || !strings.Contains(m.xclient, "HELO=client.example.org") ||
		!strings.Contains(m.xclient, "NAME=[UNAVAILABLE]") || !strings.Contains(m.xclient, "PROTO=ESMTP") {
		t.Errorf("XCLIENT %q", m.xclient)
	}
	if m.helo != "client.example.org" || m.from != "sender@example.net" || len(m.to) != 1 || m.data != testMsg {
		t.Errorf("message %+v", m)
	}
	rcv := h.ev.find(t, event.KindReceived, event.ReasonNone)
	if rcv.QueueID != "FAKE1" || rcv.Service != Service || rcv.Client.String() != "127.0.0.1" {
		t.Errorf("received event %+v", rcv)
	}
	unk := h.ev.find(t, event.KindReject, event.ReasonUnknownRecipient)
	if !unk.Abuse || unk.Code != 550 || unk.DSN != "5.1.1" || unk.To != "nobody@example.com" {
		t.Errorf("unknown recipient event %+v", unk)
	}
	if st := h.g.Stats(); st.Messages != 1 || st.Admitted != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestNetSMTPClient(t *testing.T) {
	h := newHarness(t, nil)
	if err := sendMail(t, h.addr, "a@example.net", []string{"bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.up.messages()); n != 1 {
		t.Fatalf("upstream got %d messages", n)
	}
}

func TestHELOWithoutPipelining(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.GreetPause = Duration(50 * time.Millisecond); c.GreetTeaser = true })
	c := dial(t, h.addr)
	if text := c.expect(220); !strings.HasPrefix(text, "220-guard.test") {
		t.Fatalf("greeting %q", text)
	}
	c.cmd("HELO client.example.org", 250)
	c.cmd("MAIL FROM:<a@example.net>", 250)
	c.cmd("RCPT TO:<alice@example.com>", 250)
	c.cmd("DATA", 354)
	c.send(testWire + ".\r\n")
	c.expect(250)
	c.cmd("QUIT", 221)
	m := h.up.messages()
	if len(m) != 1 || !strings.Contains(m[0].xclient, "PROTO=SMTP") || m[0].helo != "client.example.org" {
		t.Fatalf("messages %+v", m)
	}
	c.c.Close()
	time.Sleep(100 * time.Millisecond) // let the guard read the close
	if h.ev.has(event.KindLostConnection) {
		t.Errorf("a clean QUIT was logged as a lost connection: %s", h.ev.summary())
	}
}

func TestPregreet(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.GreetPause = Duration(300 * time.Millisecond); c.GreetTeaser = true })
	c := dial(t, h.addr)
	c.send("EHLO bot.example\r\n")
	for _, want := range []string{"220-guard.test ESMTP", "554 5.5.1 Protocol error: talking before greeting"} {
		if l, _ := c.r.ReadString('\n'); strings.TrimSpace(l) != want {
			t.Fatalf("got %q, want %q", l, want)
		}
	}
	if !c.closed() {
		t.Error("not closed after pregreet")
	}
	ev := h.ev.find(t, event.KindPregreet, event.ReasonNone)
	if !ev.Abuse || ev.Count != len("EHLO bot.example\r\n") {
		t.Errorf("event %+v", ev)
	}
	// The pregreet detector bans at once; the next connection is refused.
	c2 := dial(t, h.addr)
	c2.expect(554)
	if h.up.connCount() != 0 {
		t.Error("bot reached the upstream")
	}
}

func TestImproperPipelining(t *testing.T) {
	for _, tc := range []struct {
		name  string
		greet []string
		burst string
		after string
	}{
		{"after HELO", []string{"HELO c.example.org"}, "MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.com>\r\n", "MAIL"},
		{"EHLO with MAIL", nil, "EHLO c.example.org\r\nMAIL FROM:<a@example.net>\r\n", "EHLO"},
		{"DATA with body", []string{"EHLO c.example.org", "MAIL FROM:<a@example.net>", "RCPT TO:<alice@example.com>"}, "DATA\r\nSubject: x\r\n", "DATA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			c := dial(t, h.addr)
			c.expect(220)
			for _, l := range tc.greet {
				c.cmd(l, 250)
			}
			c.send(tc.burst)
			for {
				code, text := c.reply()
				if code == 554 {
					if !strings.Contains(text, "5.5.0") {
						t.Fatalf("reply %q", text)
					}
					break
				}
				if code != 250 {
					t.Fatalf("unexpected %q", text)
				}
			}
			if !c.closed() {
				t.Error("not closed")
			}
			ev := h.ev.find(t, event.KindPipelining, event.ReasonNone)
			if ev.Stage != tc.after || !ev.Abuse {
				t.Errorf("event %+v", ev)
			}
			if len(h.up.messages()) != 0 {
				t.Error("message delivered")
			}
		})
	}
}

func TestHELOChecks(t *testing.T) {
	for _, tc := range []struct {
		helo   string
		code   int
		reason event.Reason
	}{
		{"friend", 554, event.ReasonHeloAccess},
		{"localhost", 554, event.ReasonHeloAccess},
		{"guard.test", 554, event.ReasonHeloAccess},
		{"nodot", 504, event.ReasonHeloNonFQDN},
		{"192.0.2.1", 504, event.ReasonHeloNonFQDN},
		{"bad!name.example", 501, event.ReasonHeloInvalid},
		{"[192.0.2.1]", 250, 0},
		{"[IPv6:2001:db8::1]", 250, 0},
		{"[999.1.1.1]", 501, event.ReasonHeloInvalid},
		{"mail.example.org", 250, 0},
	} {
		t.Run(tc.helo, func(t *testing.T) {
			h := newHarness(t, nil)
			c := dial(t, h.addr)
			c.expect(220)
			c.cmd("EHLO "+tc.helo, tc.code)
			if tc.code == 250 {
				if h.ev.has(event.KindReject) {
					t.Errorf("reject event for a good HELO: %s", h.ev.summary())
				}
				return
			}
			ev := h.ev.find(t, event.KindReject, tc.reason)
			if !ev.Abuse || ev.Stage != "EHLO" || ev.Helo != tc.helo || ev.Code != tc.code {
				t.Errorf("event %+v", ev)
			}
			// HELO is required: MAIL without an accepted HELO fails.
			c.cmd("MAIL FROM:<a@example.net>", 503)
		})
	}
}

func TestHELOWarnMode(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Checks.HeloDeny = Warn })
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO friend", 250)
	ev := h.ev.find(t, event.KindReject, event.ReasonHeloAccess)
	if ev.Abuse || !strings.Contains(ev.Raw, "reject_warning") {
		t.Errorf("warn event %+v", ev)
	}
}

func TestEnvelopeChecks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mod        func(*Config)
		mail, rcpt string
		mailCode   int
		rcptCode   int
		reason     event.Reason
	}{
		{"non-FQDN sender", nil, "joe@localhost", "", 504, 0, event.ReasonSenderNonFQDN},
		{"non-FQDN recipient", nil, "a@example.net", "alice@example", 250, 504, event.ReasonRecipientNonFQDN},
		{"relay", func(c *Config) { c.Domains = []string{"example.com"} }, "a@example.net", "victim@elsewhere.org", 250, 554, event.ReasonRelayDenied},
		{"local unknown recipient", func(c *Config) { c.Recipients = []string{"alice@example.com"} }, "a@example.net", "carol@example.com", 250, 550, event.ReasonUnknownRecipient},
		{"invalid UTF-8 sender", nil, "a\xff\xfe@example.net", "", 501, 0, event.ReasonSenderAccess},
		{"invalid UTF-8 recipient", nil, "a@example.net", "\xc3\x28@example.com", 250, 501, 0}, // go-smtp's parser refuses it
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.mod)
			c := dial(t, h.addr)
			c.expect(220)
			c.cmd("EHLO c.example.org", 250)
			c.cmd("MAIL FROM:<"+tc.mail+">", tc.mailCode)
			if tc.rcpt != "" {
				c.cmd("RCPT TO:<"+tc.rcpt+">", tc.rcptCode)
			}
			if tc.reason != 0 {
				if ev := h.ev.find(t, event.KindReject, tc.reason); !ev.Abuse {
					t.Errorf("event %+v", ev)
				}
			}
			if h.up.connCount() != 0 {
				t.Error("a locally refused transaction reached the upstream")
			}
		})
	}
}

func TestDictionaryAttackBans(t *testing.T) {
	h := newHarness(t, nil)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO harvester.example.org", 250)
	c.cmd("MAIL FROM:<spam@example.net>", 250)
	for i := range 5 {
		c.cmd("RCPT TO:<user"+string(rune('a'+i))+"@example.com>", 550)
	}
	// The block list is asked at each command: banned by its 5th
	// unknown recipient, the client's session ends at its next command.
	c.cmd("QUIT", 421)
	if !c.closed() {
		t.Error("banned client's session not closed")
	}
	why, banned := h.bl.Banned(mustAddr("127.0.0.1"))
	if !banned || !strings.HasPrefix(why, "dictionary") {
		t.Fatalf("not banned by the dictionary detector: %q %s", why, h.ev.summary())
	}
	c2 := dial(t, h.addr)
	if text := c2.expect(554); !strings.Contains(text, "5.7.1") {
		t.Fatalf("reply %q", text)
	}
	if !c2.closed() {
		t.Error("banned client not closed")
	}
	if st := h.g.Stats(); st.Blocked != 1 || st.BannedSessions != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestTooManyErrors(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limits.HardErrorLimit = 5
		c.Limits.SoftErrorLimit = 2
		c.Limits.ErrorSleep = Duration(10 * time.Millisecond)
	})
	c := dial(t, h.addr)
	c.expect(220)
	start := time.Now()
	for range 5 {
		c.cmd("WHAT", 502)
	}
	c.expect(421)
	if !c.closed() {
		t.Error("not closed")
	}
	// tarpit: errors 3, 4, 5 were delayed 10, 20, 30 ms
	if d := time.Since(start); d < 60*time.Millisecond {
		t.Errorf("no tarpit delay: %s", d)
	}
	ev := h.ev.find(t, event.KindTooManyErrors, event.ReasonNone)
	if !ev.Abuse || ev.Stage != "UNKNOWN" {
		t.Errorf("event %+v", ev)
	}
	if _, banned := h.bl.Banned(mustAddr("127.0.0.1")); !banned {
		t.Error("too many errors did not ban (error_burst decides at once)")
	}
}

func TestMultiRecipientBounce(t *testing.T) {
	h := newHarness(t, nil)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO c.example.org", 250)
	c.cmd("MAIL FROM:<>", 250)
	c.cmd("RCPT TO:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.com>", 250)
	if text := c.cmd("DATA", 550); !strings.Contains(text, "5.5.3") {
		t.Fatalf("reply %q", text)
	}
	h.ev.find(t, event.KindReject, event.ReasonMultiRecipientBounce)
	c.cmd("RSET", 250)
	// a single-recipient bounce is fine
	c.cmd("MAIL FROM:<>", 250)
	c.cmd("RCPT TO:<alice@example.com>", 250)
	c.cmd("DATA", 354)
	c.send(testWire + ".\r\n")
	c.expect(250)
	if n := len(h.up.messages()); n != 1 {
		t.Fatalf("upstream got %d messages", n)
	}
}

func TestUpstreamDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	h := newHarness(t, func(c *Config) { c.Upstream = dead })
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO c.example.org", 250)
	c.cmd("MAIL FROM:<a@example.net>", 250)
	if text := c.cmd("RCPT TO:<alice@example.com>", 451); !strings.Contains(text, "4.4.1") {
		t.Fatalf("reply %q", text)
	}
	c.cmd("DATA", 502) // nothing accepted, no 354
	if st := h.g.Stats(); st.UpstreamErrors == 0 || st.Messages != 0 {
		t.Errorf("stats %+v", st)
	}
	for _, ev := range h.ev.all() {
		if ev.Abuse {
			t.Errorf("upstream failure counted against the client: %+v", ev)
		}
	}
}

func TestXCLIENTFromClientRefused(t *testing.T) {
	h := newHarness(t, nil)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO c.example.org", 250)
	c.cmd("XCLIENT ADDR=192.0.2.1", 550)
	c.cmd("XFORWARD ADDR=192.0.2.1", 550)
	c.cmd("MAIL FROM:<a@example.net>", 250)
	c.cmd("RCPT TO:<alice@example.com>", 250)
	c.cmd("DATA", 354)
	c.send(testWire + ".\r\n")
	c.expect(250)
	m := h.up.messages()
	if len(m) != 1 || !strings.Contains(m[0].xclient, "ADDR=127.0.0.1 ") {
		t.Fatalf("spoofed XCLIENT reached upstream: %+v", m)
	}
	h.up.mu.Lock()
	defer h.up.mu.Unlock()
	if len(h.up.xclients) != 1 {
		t.Errorf("upstream saw XCLIENT %d times: %q", len(h.up.xclients), h.up.xclients)
	}
}

func TestVRFYDisabled(t *testing.T) {
	h := newHarness(t, nil)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO c.example.org", 250)
	c.cmd("VRFY alice", 502)
}

func TestProxyHandoff(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Handoff = HandoffProxy })
	if err := sendMail(t, h.addr, "a@example.net", []string{"alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	h.up.mu.Lock()
	defer h.up.mu.Unlock()
	if len(h.up.proxies) != 1 || !strings.HasPrefix(h.up.proxies[0], "PROXY TCP4 127.0.0.1 127.0.0.1 ") || len(h.up.xclients) != 0 {
		t.Fatalf("proxy %q xclient %q", h.up.proxies, h.up.xclients)
	}
	if len(h.up.msgs) != 1 {
		t.Fatal("no message")
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("per client", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.Limits.MaxConnectionsPerClient = 1 })
		c1 := dial(t, h.addr)
		c1.expect(220)
		c2 := dial(t, h.addr)
		c2.expect(421)
		c1.cmd("QUIT", 221)
		time.Sleep(50 * time.Millisecond)
		c3 := dial(t, h.addr)
		c3.expect(220)
	})
	t.Run("rate", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.Limits.ConnectionRate = 2; c.Limits.ConnectionRateWindow = Duration(time.Hour) })
		for range 2 {
			c := dial(t, h.addr)
			c.expect(220)
			c.cmd("QUIT", 221)
		}
		c := dial(t, h.addr)
		c.expect(421)
		if st := h.g.Stats(); st.RateLimit != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("allowlist skips limits", func(t *testing.T) {
		h := newHarness(t, func(c *Config) {
			c.Limits.MaxConnectionsPerClient = 1
			c.Allowlist = []string{"127.0.0.0/8"}
			c.GreetPause = Duration(30 * time.Second)
		})
		c1 := dial(t, h.addr)
		c1.expect(220) // no greet pause for allowlisted clients
		c2 := dial(t, h.addr)
		c2.expect(220)
	})
}

// dnsblServer answers A 127.0.0.2 for listed names, NXDOMAIN otherwise.
func dnsblServer(t *testing.T, listed map[string]bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if listed[strings.ToLower(q.Name)] && q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 60 IN A 127.0.0.2")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestDNSBL(t *testing.T) {
	resolver := dnsblServer(t, map[string]bool{
		"1.0.0.127.zen.example.": true, "1.0.0.127.b.example.": true, // 127.0.0.1: 3+1
		"2.0.0.127.b.example.": true, // 127.0.0.2: 1 < threshold
	})
	h := newHarness(t, func(c *Config) {
		c.Resolver = resolver
		c.DNSBL.Sites = []string{"zen.example*3", "b.example*1", "c.example"}
		c.DNSBL.Threshold = 3
		c.DNSBL.Timeout = Duration(2 * time.Second)
	})
	c := dial(t, h.addr)
	if text := c.expect(554); !strings.Contains(text, "blocked using b.example, zen.example") {
		t.Fatalf("reply %q", text)
	}
	ev := h.ev.find(t, event.KindDNSBL, event.ReasonNone)
	if ev.Count != 4 || !ev.Abuse {
		t.Errorf("event %+v", ev)
	}
	c2 := dialFrom(t, h.addr, "127.0.0.2")
	c2.expect(220)
	c2.cmd("QUIT", 221)
}

func TestSenderDomainDNS(t *testing.T) {
	resolver := dnsblServer(t, map[string]bool{"exists.example.": true})
	h := newHarness(t, func(c *Config) { c.Resolver = resolver; c.Checks.SenderDomainDNS = Reject })
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO c.example.org", 250)
	c.cmd("MAIL FROM:<a@exists.example>", 250)
	c.cmd("RSET", 250)
	c.cmd("MAIL FROM:<a@missing.example>", 550)
	h.ev.find(t, event.KindReject, event.ReasonSenderDomainNotFound)
}

func TestReverseName(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.3", "3.2.0.192.z.example"},
		{"::ffff:192.0.2.3", "3.2.0.192.z.example"},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.z.example"},
	} {
		if got := reverseName(mustAddr(tc.ip), "z.example"); got != tc.want {
			t.Errorf("%s: got %s", tc.ip, got)
		}
	}
}

func TestXtextAndProxyHeader(t *testing.T) {
	if got := xtext("a b+c=d\xff"); got != "a+20b+2Bc+3Dd+FF" {
		t.Errorf("xtext %q", got)
	}
	local := &net.TCPAddr{IP: net.ParseIP("192.0.2.25"), Port: 25}
	if got := proxyHeader(mustAddr("198.51.100.7"), 40000, local); got != "PROXY TCP4 198.51.100.7 192.0.2.25 40000 25\r\n" {
		t.Errorf("proxy %q", got)
	}
}

func TestShutdownWithBusySession(t *testing.T) {
	h := newHarness(t, nil)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO c.example.org", 250)
	c.cmd("MAIL FROM:<a@example.net>", 250)
	c.cmd("RCPT TO:<alice@example.com>", 250) // upstream session open
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	h.g.Shutdown(ctx)
	if !c.closed() {
		t.Error("session survived Shutdown")
	}
	if len(h.up.messages()) != 0 {
		t.Error("a message was delivered")
	}
	if st := h.g.Stats(); st.Active != 0 {
		t.Errorf("stats %+v", st)
	}
}

// When the daemon also tails the upstream's log, Postfix's own reject
// lines are the evidence for its refusals: the guard's copies are context
// only, so a refusal is never counted twice.
func TestUpstreamLoggedNotCountedTwice(t *testing.T) {
	up := newFakeUpstream(t, false)
	cfg := testConfig(up.addr())
	eng, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bl := &memBlocklist{}
	ev := &eventLog{eng: eng, bl: bl}
	h := startGuard(t, cfg, Deps{Logger: testLogger(t), Sink: ev.sink, Blocklist: bl, UpstreamLogged: true}, up, ev, bl)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO harvester.example.org", 250)
	c.cmd("MAIL FROM:<spam@example.net>", 250)
	for i := range 5 {
		c.cmd("RCPT TO:<user"+string(rune('a'+i))+"@example.com>", 550)
	}
	c.cmd("QUIT", 221)
	if why, banned := bl.Banned(mustAddr("127.0.0.1")); banned {
		t.Fatalf("banned on the guard's copies of upstream refusals: %q", why)
	}
	h.ev.find(t, event.KindReject, event.ReasonUnknownRecipient) // still emitted, as context
}

// TestUpstreamRefusalClassedByStructure: a reason phrase in a quoted
// local part does not choose the class of the upstream's refusal, and
// the upstream gets the address quoted as the client sent it.
func TestUpstreamRefusalClassedByStructure(t *testing.T) {
	up := newFakeUpstream(t, false)
	eng, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bl := &memBlocklist{}
	ev := &eventLog{eng: eng, bl: bl}
	h := startGuard(t, testConfig(up.addr()), Deps{Logger: testLogger(t), Sink: ev.sink, Blocklist: bl}, up, ev, bl)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO mail.sender.example", 250)
	c.cmd("MAIL FROM:<s@sender.example>", 250)
	c.cmd(`RCPT TO:<"u1>: Recipient address rejected: Greylisted"@example.com>`, 550)
	c.cmd("QUIT", 221)
	e := h.ev.find(t, event.KindReject, event.ReasonUnknownRecipient)
	if !e.Abuse {
		t.Errorf("unknown recipient not abuse: %+v", e)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if !slices.Contains(up.lines, `RCPT TO:<"u1>: Recipient address rejected: Greylisted"@example.com>`) {
		t.Errorf("upstream did not get the quoted address: %q", up.lines)
	}
}
