package detectors

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/smtpguard"
)

func TestGuardService(t *testing.T) {
	if guardService != smtpguard.Service {
		t.Errorf("guardService %q, smtpguard.Service %q", guardService, smtpguard.Service)
	}
}

func service(s string) func(*event.Event) { return func(e *event.Event) { e.Service = s } }
func pid(n int) func(*event.Event)        { return func(e *event.Event) { e.PID = n } }
func name(n string) func(*event.Event)    { return func(e *event.Event) { e.ClientName = n } }
func from(a string) func(*event.Event)    { return func(e *event.Event) { e.From = a } }
func user(u string) func(*event.Event)    { return func(e *event.Event) { e.Detail = u } }
func code(c int) func(*event.Event)       { return func(e *event.Event) { e.Code = c } }
func abuse(b bool) func(*event.Event)     { return func(e *event.Event) { e.Abuse = b } }

// TestNewClasses has positives and near misses for flood, admin_reject,
// content_reject, sasl_spray, score, the long SASL window and dictionary
// per prefix, with the defaults unless cfg says otherwise.
func TestNewClasses(t *testing.T) {
	m, s := time.Minute, time.Second
	lostAfter := func(ip, st string) func(int, time.Duration) event.Event {
		return func(_ int, at time.Duration) event.Event {
			return ev(at, ip, event.KindLostConnection, stage(st), abuse(st != "CONNECT"))
		}
	}
	// n failed handshakes, each an SSL_accept error, a TLS library
	// problem and the lost connection within a second; three processes
	// take turns, so with a gap under a second sessions interleave, and
	// each pid serves several one after the other.
	tls := func(n int, ip string, gap time.Duration) []event.Event {
		var out []event.Event
		for i := range n {
			at := time.Duration(i) * gap
			p := 4000 + i%3
			out = append(out,
				ev(at, ip, event.KindTLSError, pid(p)),                // SSL_accept error: abuse, as the parser says
				ev(at+s/2, ip, event.KindTLSError, pid(p), noAbuse()), // TLS library problem: client borrowed
				ev(at+s, ip, event.KindLostConnection, stage("STARTTLS"), pid(p)))
		}
		return sortByTime(out)
	}
	limit := func(which string) func(int, time.Duration) event.Event {
		return func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindRateLimit, detail(which), noAbuse())
		}
	}
	clientAccess := func(_ int, at time.Duration) event.Event {
		return ev(at, ipA, event.KindReject, reason(event.ReasonClientAccess), stage("CONNECT"))
	}
	content := func(svc string) func(int, time.Duration) event.Event {
		return func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonMessageRejected), stage("END-OF-MESSAGE"), service(svc))
		}
	}
	fail := func(u string) func(int, time.Duration) event.Event {
		return func(_ int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail, user(u)) }
	}
	noHelo := func(at time.Duration) event.Event {
		return ev(at, ipA, event.KindDisconnect, detail("mail=1 rcpt=1 data=1 quit=1 commands=4"), noAbuse())
	}
	senderNonFQDN := func(at time.Duration) event.Event {
		return ev(at, ipA, event.KindReject, reason(event.ReasonSenderNonFQDN), stage("RCPT"), code(504))
	}
	harvest := func(addrs []string, step time.Duration) func(int, time.Duration) event.Event {
		return func(i int, at time.Duration) event.Event {
			return ev(at, addrs[i%len(addrs)], event.KindReject, unknown(fmt.Sprintf("h%d@example.org", i))...)
		}
	}
	pool3 := []string{"203.0.113.10", "203.0.113.11", "203.0.113.12"}

	tests := []struct {
		name   string
		cfg    func(*Config)
		events []event.Event
		want   []string
	}{
		// flood
		{name: "flood/connect and drop 30 times in a minute", events: every(30, 0, 2*s, lostAfter(ipA, "CONNECT")),
			want: []string{"29: flood 203.0.113.7/32 n=30"}},
		{name: "flood/connect and drop 12 times in a minute is below the connect drops bar", events: every(12, 0, 5*s, lostAfter(ipA, "CONNECT"))},
		{name: "flood/lost after EHLO, 8 in a minute, not error_burst too", events: every(10, 0, 5*s, lostAfter(ipA, "EHLO")),
			want: []string{"7: flood 203.0.113.7/32 n=8"}},
		{name: "flood/lost after EHLO is error_burst's when flood is off", cfg: func(c *Config) { c.Flood.Enabled = false },
			events: every(10, 0, 5*s, lostAfter(ipA, "EHLO")), want: []string{"5: error_burst 203.0.113.7/32 n=6"}},
		{name: "flood/7 in a minute", events: every(7, 0, 8*s, lostAfter(ipA, "CONNECT"))},
		{name: "flood/timeouts after HELO", events: every(10, 0, 5*s, func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindTimeout, stage("HELO"))
		}), cfg: func(c *Config) { c.ErrorBurst.Enabled = false }, want: []string{"7: flood 203.0.113.7/32 n=8"}},
		{name: "flood/lost after RCPT is error_burst's, not flood", events: every(12, 0, 5*s, lostAfter(ipA, "RCPT")),
			want: []string{"5: error_burst 203.0.113.7/32 n=6"}},
		{name: "flood/postscreen hangups", events: every(10, 0, 5*s, func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindHangup, service("postscreen"))
		}), want: []string{"7: flood 203.0.113.7/32 n=8"}},
		{name: "flood/a failed TLS handshake counts once", events: tls(10, ipA, 5*s),
			want: []string{"21: flood 203.0.113.7/32 n=8"}},
		{name: "flood/interleaved handshakes", cfg: func(c *Config) { c.ErrorBurst.Enabled = false }, events: tls(10, ipA, 400*time.Millisecond),
			want: []string{"18: flood 203.0.113.7/32 n=8"}}, // the 8th session's first line
		{name: "flood/7 failed TLS handshakes", cfg: func(c *Config) { c.ErrorBurst.Enabled = false }, events: tls(7, ipA, 400*time.Millisecond)},
		{name: "flood/connection rate limit", events: every(10, 0, 3*s, limit(event.LimitConnectionRate)),
			want: []string{"7: flood 203.0.113.7/32 n=8"}},
		{name: "flood/new TLS session rate limit", events: every(10, 0, 3*s, limit(event.LimitNewTLSRate)),
			want: []string{"7: flood 203.0.113.7/32 n=8"}},
		{name: "flood/message rate limit is volume, not a flood", events: every(60, 0, s, limit(event.LimitMessageRate))},
		{name: "flood/tunable", cfg: func(c *Config) { c.Flood.Threshold = 3 }, events: every(3, 0, 5*s, lostAfter(ipA, "EHLO")),
			want: []string{"2: flood 203.0.113.7/32 n=3"}},
		{name: "flood/connect drops tunable", cfg: func(c *Config) { c.Flood.ConnectDropsThreshold = 3 }, events: every(3, 0, 5*s, lostAfter(ipA, "CONNECT")),
			want: []string{"2: flood 203.0.113.7/32 n=3"}},
		{name: "flood/connection concurrency limit counts once a window", events: every(20, 0, 3*s, limit(event.LimitConnectionCount))},
		{name: "flood/a TLS library problem alone counts nothing", events: every(20, 0, 2*s, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindTLSError, pid(4000+i%3), noAbuse())
		})},

		// admin_reject
		{name: "admin_reject/3 access list rejects in 1h", events: every(3, 0, 20*m, clientAccess),
			want: []string{"2: admin_reject 203.0.113.7/32 n=3"}},
		{name: "admin_reject/2 in 1h", events: every(4, 0, 40*m, clientAccess)},
		{name: "admin_reject/postscreen denylist", events: every(3, 0, 5*m, func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindPSDenylisted, service("postscreen"))
		}), want: []string{"2: admin_reject 203.0.113.7/32 n=3"}},
		{name: "admin_reject/cannot find your hostname is not the admin's list", events: every(5, 0, 10*m, func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonClientNoRDNS), stage("RCPT"), code(550))
		})},

		// content_reject
		{name: "content_reject/cleanup header checks", events: every(3, 0, 10*m, content("postfix/cleanup")),
			want: []string{"2: content_reject 203.0.113.7/32 n=3"}},
		{name: "content_reject/smtpd milter-reject", events: every(3, 0, 10*m, content("postfix/smtpd")),
			want: []string{"2: content_reject 203.0.113.7/32 n=3"}},
		{name: "content_reject/the guard's own peer", events: every(3, 0, 10*m, content("mxguard/guard")),
			want: []string{"2: content_reject 203.0.113.7/32 n=3"}},
		{name: "content_reject/two", events: every(2, 0, 10*m, content("postfix/cleanup"))},
		{name: "content_reject/after a successful AUTH", events: cat(
			one(ev(0, ipA, event.KindSASLLogin, user("alice@example.com"))),
			every(5, m, 5*m, content("postfix/cleanup")))},
		{name: "content_reject/an AUTH long ago does not cover", events: cat(
			one(ev(0, ipA, event.KindSASLLogin, user("alice@example.com"))),
			every(3, 2*time.Hour, 5*m, content("postfix/cleanup"))),
			want: []string{"3: content_reject 203.0.113.7/32 n=3"}},

		// sasl_spray
		{name: "sasl_spray/4 usernames", events: cat(
			every(1, 0, m, fail("admin")), every(1, 10*m, m, fail("info")),
			every(1, 20*m, m, fail("sales")), every(1, 30*m, m, fail("test"))),
			want: []string{"3: sasl_spray 203.0.113.7/32 n=4"}},
		{name: "sasl_spray/usernames case-folded", events: cat(
			every(1, 0, m, fail("Admin")), every(1, 10*m, m, fail("admin")),
			every(1, 20*m, m, fail("ADMIN")), every(1, 30*m, m, fail("info")))},
		{name: "sasl_spray/4 usernames over more than an hour", events: every(4, 0, 25*m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindSASLFail, user(fmt.Sprintf("u%d", i)))
		})},
		{name: "sasl_spray/a user who got it right is taken out", events: cat(
			every(1, 0, m, fail("alice")), every(1, m, m, fail("bob")), every(1, 2*m, m, fail("carol")),
			one(ev(3*m, ipA, event.KindSASLLogin, user("bob"))),
			every(1, 4*m, m, fail("dave")))},
		{name: "sasl_spray/another user's login does not hide a spray", events: cat(
			every(1, 0, m, fail("admin")), every(1, m, m, fail("info")), every(1, 2*m, m, fail("sales")),
			one(ev(3*m, ipA, event.KindSASLLogin, user("alice"))),
			every(1, 4*m, m, fail("test"))),
			want: []string{"4: sasl_spray 203.0.113.7/32 n=4"}},
		{name: "sasl_spray/no username logged", events: every(4, 0, 5*m, func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindSASLFail)
		})},

		// score
		{name: "score/no HELO and a non-FQDN sender", events: one(noHelo(0), noHelo(m), senderNonFQDN(2*m), senderNonFQDN(3*m)),
			want: []string{"3: score 203.0.113.7/32 n=4"}},
		{name: "score/one class repeated never decides alone", events: every(40, 0, m, func(_ int, at time.Duration) event.Event { return noHelo(at) })},
		{name: "score/decays", events: one(noHelo(0), noHelo(m), senderNonFQDN(3*time.Hour), senderNonFQDN(3*time.Hour+m))},
		{name: "score/VRFY probing, relay and a bad HELO", events: one(
			ev(0, ipA, event.KindDisconnect, detail("ehlo=1 vrfy=0/3 quit=1 commands=2/5"), count(3)),
			ev(m, ipA, event.KindReject, reason(event.ReasonRelayDenied), stage("RCPT")),
			ev(2*m, ipA, event.KindReject, reason(event.ReasonRelayDenied), stage("RCPT")),
			ev(3*m, ipA, event.KindReject, reason(event.ReasonHeloNonFQDN), stage("RCPT"))),
			want: []string{"3: score 203.0.113.7/32 n=4"}},
		{name: "score/hostname mismatch and unknown recipients stay low", events: cat(
			every(60, 0, m, func(_ int, at time.Duration) event.Event { return ev(at, ipA, event.KindHostnameMismatch, noAbuse()) }),
			every(4, 0, 15*m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("old%d@example.org", i))...)
			}))},
		{name: "score/forgiven by login", events: one(noHelo(0), noHelo(m), senderNonFQDN(2*m),
			ev(3*m, ipA, event.KindSASLLogin, user("alice")), senderNonFQDN(4*m))},
		{name: "score/off", cfg: func(c *Config) { c.Score.Enabled = false }, events: one(noHelo(0), noHelo(m), senderNonFQDN(2*m), senderNonFQDN(3*m))},
		{name: "score/a weight of 0 turns a class off", cfg: func(c *Config) { c.Score.Weights.NoHelo = 0 },
			events: one(noHelo(0), noHelo(m), senderNonFQDN(2*m), senderNonFQDN(3*m))},

		// warn_if_reject: what would have been refused is never evidence
		{name: "reject_warning never counts", events: every(40, 0, 10*s, func(i int, at time.Duration) event.Event {
			r := []event.Reason{event.ReasonClientAccess, event.ReasonRelayDenied, event.ReasonSenderNonFQDN,
				event.ReasonUnknownRecipient, event.ReasonMessageRejected, event.ReasonHeloInvalid}[i%6]
			return ev(at, ipA, event.KindRejectWarning, reason(r), to(fmt.Sprintf("w%d@example.org", i)), stage("RCPT"), noAbuse())
		})},

		// dictionary per prefix
		{name: "dictionary/15 recipients from 3 addresses of a /24 within 1h", events: every(15, 0, 4*m, harvest(pool3, 4*m)),
			want: []string{"14: dictionary 203.0.113.0/24 n=15"}},
		{name: "dictionary/per prefix v6 /64", events: every(15, 0, 4*m, harvest([]string{"2001:db8:5::1", "2001:db8:5::2", "2001:db8:5::3"}, 4*m)),
			want: []string{"14: dictionary 2001:db8:5::/64 n=15"}},
		{name: "dictionary/15 recipients from 2 addresses", events: every(15, 0, 4*m, harvest(pool3[:2], 4*m))},
		{name: "dictionary/14 recipients", events: every(14, 0, 4*m, harvest(pool3, 4*m))},
		{name: "dictionary/prefix off", cfg: func(c *Config) { c.Dictionary.PerPrefix = false }, events: every(15, 0, 4*m, harvest(pool3, 4*m))},
		{name: "dictionary/per prefix over more than the window", events: every(15, 0, 5*m, harvest(pool3, 5*m))},
		{name: "dictionary/a busy prefix's accepted mail protects it", events: cat(
			every(40, 0, 90*s, func(i int, at time.Duration) event.Event {
				return ev(at, pool3[i%3], event.KindReceived)
			}),
			every(15, 30*s, 4*m, harvest(pool3, 4*m)))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			got, _, _ := run(t, cfg, sortByTime(tc.events))
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("decisions:\ngot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// sortByTime orders events by time, stably (logs are in time order).
func sortByTime(es []event.Event) []event.Event {
	out := append([]event.Event(nil), es...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Time.Before(out[j-1].Time); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// TestScoreEvidence checks that a score decision says which events scored
// and with which weights.
func TestScoreEvidence(t *testing.T) {
	m := time.Minute
	_, ds, _ := run(t, DefaultConfig(), one(
		ev(0, ipA, event.KindDisconnect, detail("mail=1 rcpt=1 data=1 quit=1 commands=4"), noAbuse()),
		ev(m, ipA, event.KindHostnameMismatch, noAbuse()),
		ev(2*m, ipA, event.KindReject, reason(event.ReasonMultiRecipientBounce), stage("DATA")),
		ev(3*m, ipA, event.KindReject, reason(event.ReasonMultiRecipientBounce), stage("DATA"))))
	if len(ds) != 1 {
		t.Fatalf("decisions %+v, want one", ds)
	}
	d := ds[0]
	if d.Detector != Score || d.Evidence != 4 {
		t.Errorf("decision %+v", d)
	}
	for _, want := range []string{"score 11.2 ≥ 10 (", "no_helo 2.8", "hostname_mismatch 0.5", "multi_recipient_bounce 7.9", "≥ 10", "half-life 30m"} {
		if !strings.Contains(d.Reason, want) {
			t.Errorf("reason %q lacks %q", d.Reason, want)
		}
	}
	if len(d.Lines) != 4 || !strings.HasPrefix(d.Lines[0], "score +3 no_helo: ") ||
		!strings.HasPrefix(d.Lines[1], "score +0.5 hostname_mismatch: ") ||
		!strings.HasPrefix(d.Lines[3], "score +4 multi_recipient_bounce: ") || !strings.HasSuffix(d.Lines[3], "DATA  0") {
		t.Errorf("lines %q", d.Lines)
	}
}

// session is one SMTP session of a client at at: connect, whatever mid
// holds, disconnect with statistics stats.
func smtpSession(at time.Duration, ip, svc, rname, stats string, mid ...func(at time.Duration) event.Event) []event.Event {
	out := []event.Event{ev(at, ip, event.KindConnect, service(svc), name(rname))}
	for i, f := range mid {
		out = append(out, f(at+time.Duration(i+1)*time.Second))
	}
	return append(out, ev(at+time.Duration(len(mid)+1)*time.Second, ip, event.KindDisconnect, service(svc), name(rname), detail(stats)))
}

func repeatEvery(n int, start, step time.Duration, f func(i int, at time.Duration) []event.Event) []event.Event {
	var out []event.Event
	for i := range n {
		out = append(out, f(i, start+time.Duration(i)*step)...)
	}
	return out
}

// TestHardNegatives runs realistic traffic of legitimate clients that
// per-address thresholds, long windows and weak-signal scores could
// mistake for abuse. None may be decided by the defaults.
func TestHardNegatives(t *testing.T) {
	m, s, h := time.Minute, time.Second, time.Hour
	const smtpd, submission = "postfix/smtpd", "postfix/submission/smtpd"
	received := func(ip, rname string) func(time.Duration) event.Event {
		return func(at time.Duration) event.Event { return ev(at, ip, event.KindReceived, name(rname)) }
	}
	tests := []struct {
		name   string
		events []event.Event
	}{
		{
			// A provider's outbound pool (three addresses of one /24,
			// verified names) delivers all day: a message every 20 s, and
			// every 3 minutes one to one of 20 stale addresses, so the
			// prefix sees 20 distinct unknown recipients an hour.
			name: "high-volume relay pool with stale recipients",
			events: repeatEvery(6*180, 0, 20*s, func(i int, at time.Duration) []event.Event {
				k := i % 3
				if i%9 == 4 {
					k = (i / 9) % 3 // the stale ones from every address of the pool
				}
				ip := fmt.Sprintf("198.51.100.%d", 25+k)
				rname := fmt.Sprintf("mail-%d.relay.example.net", 25+k)
				if i%9 == 4 {
					stale := fmt.Sprintf("former%d@example.org", (i/9)%20)
					return smtpSession(at, ip, smtpd, rname, "ehlo=1 mail=1 rcpt=0/1 rset=1 quit=1 commands=4/5",
						func(at time.Duration) event.Event {
							return ev(at, ip, event.KindReject, name(rname), from("news@relay.example.net"), reason(event.ReasonUnknownRecipient), to(stale), stage("RCPT"))
						})
				}
				return smtpSession(at, ip, smtpd, rname, "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", received(ip, rname))
			}),
		},
		{
			// Six users behind one address log in every 10 minutes; bob
			// mistypes four times before he gets it right, carol three
			// times, dave's phone keeps an old password for three hours,
			// and a body check refuses alice's attachment three times.
			name: "office NAT",
			events: sortByTime(cat(
				repeatEvery(48, 0, 10*m, func(i int, at time.Duration) []event.Event {
					u := []string{"alice", "bob", "carol", "dave", "erin", "frank"}[i%6] + "@example.com"
					return smtpSession(at, "203.0.113.50", submission, "gw.office.example", "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8",
						func(at time.Duration) event.Event {
							return ev(at, "203.0.113.50", event.KindSASLLogin, service(submission), user(u))
						}, received("203.0.113.50", "gw.office.example"))
				}),
				every(4, 61*m, m, func(_ int, at time.Duration) event.Event {
					return ev(at, "203.0.113.50", event.KindSASLFail, service(submission), user("bob@example.com"))
				}),
				one(ev(65*m, "203.0.113.50", event.KindSASLLogin, service(submission), user("bob@example.com"))),
				every(3, 2*h+3*m, 30*s, func(_ int, at time.Duration) event.Event {
					return ev(at, "203.0.113.50", event.KindSASLFail, service(submission), user("carol@example.com"))
				}),
				one(ev(2*h+5*m, "203.0.113.50", event.KindSASLLogin, service(submission), user("carol@example.com"))),
				every(6, 3*h+7*m, 30*m, func(_ int, at time.Duration) event.Event {
					return ev(at, "203.0.113.50", event.KindSASLFail, service(submission), user("dave@example.com"))
				}),
				every(3, 5*h+2*m, 4*m, func(_ int, at time.Duration) event.Event {
					return ev(at, "203.0.113.50", event.KindReject, service("postfix/cleanup"), reason(event.ReasonMessageRejected),
						stage("END-OF-MESSAGE"), from("alice@example.com"), to("client@example.net"))
				}),
			)),
		},
		{
			name: "monitoring probe: connect and QUIT every minute for 8 hours",
			events: repeatEvery(8*60, 0, m, func(_ int, at time.Duration) []event.Event {
				return smtpSession(at, "192.0.2.200", smtpd, "monitor.example.net", "ehlo=1 quit=1 commands=2")
			}),
		},
		{
			name: "monitoring probe: connect and drop every minute for 8 hours",
			events: repeatEvery(8*60, 0, m, func(_ int, at time.Duration) []event.Event {
				return one(ev(at, "192.0.2.200", event.KindConnect),
					ev(at+s, "192.0.2.200", event.KindLostConnection, stage("CONNECT"), noAbuse()))
			}),
		},
		{
			name: "monitoring probe: EHLO and drop every minute, through postscreen, for 8 hours",
			events: repeatEvery(8*60, 0, m, func(_ int, at time.Duration) []event.Event {
				return one(ev(at, "192.0.2.200", event.KindPSConnect, service("postfix/postscreen")),
					ev(at+s, "192.0.2.200", event.KindHangup, service("postfix/postscreen")),
					ev(at+30*s, "192.0.2.201", event.KindConnect),
					ev(at+31*s, "192.0.2.201", event.KindLostConnection, stage("EHLO")))
			}),
		},
		{
			name: "certificate probe: STARTTLS and a TLS error every minute for 8 hours",
			events: repeatEvery(8*60, 0, m, func(i int, at time.Duration) []event.Event {
				return one(ev(at, "192.0.2.200", event.KindConnect, pid(7000+i%50)),
					ev(at+s, "192.0.2.200", event.KindTLSError, pid(7000+i%50), noAbuse()),
					ev(at+s, "192.0.2.200", event.KindLostConnection, stage("STARTTLS"), pid(7000+i%50)))
			}),
		},
		{
			// reject_unknown_client_hostname's 450 for three queued
			// messages, retried with doubling backoff for two days, with
			// the hostname warning at every connection.
			name: "MTA without rDNS retrying with backoff",
			events: func() []event.Event {
				var out []event.Event
				for at, step := time.Duration(0), 5*m; at < 48*h; at, step = at+step, min(2*step, 4*h) {
					for k := range 3 {
						out = append(out, smtpSession(at+time.Duration(k)*10*s, "198.51.100.77", smtpd, "unknown", "ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
							func(at time.Duration) event.Event {
								return ev(at, "198.51.100.77", event.KindHostnameMismatch, name("host77.example.net"), noAbuse())
							},
							func(at time.Duration) event.Event {
								return ev(at, "198.51.100.77", event.KindReject, reason(event.ReasonClientNoRDNS), code(450), noAbuse(),
									from(fmt.Sprintf("sender%d@example.net", k)), to("alice@example.org"), stage("RCPT"))
							})...)
					}
				}
				return out
			}(),
		},
		{
			name: "greylisted MTA retrying",
			events: repeatEvery(4, 0, 7*m, func(i int, at time.Duration) []event.Event {
				var mid []func(time.Duration) event.Event
				for r := range 10 {
					rcpt := fmt.Sprintf("user%d@example.org", r)
					if i < 3 {
						mid = append(mid, func(at time.Duration) event.Event {
							return ev(at, "192.0.2.60", event.KindReject, reason(event.ReasonGreylisted), to(rcpt), from("list@sender.example"), stage("RCPT"))
						})
					}
				}
				if i == 3 {
					mid = append(mid, received("192.0.2.60", "mx.sender.example"))
				}
				return smtpSession(at, "192.0.2.60", smtpd, "mx.sender.example", "ehlo=1 mail=1 rcpt=0/10 quit=1 commands=3/13", mid...)
			}),
		},
		{
			// A web application pipelines its commands (as offered), sends
			// a message every 5 s, meets the message rate limit now and
			// then, drops after the message without QUIT, gets a typo in
			// a form address every 10 minutes and a www-data@localhost
			// sender once an hour.
			name: "bulk web application with PIPELINING",
			events: repeatEvery(2*720, 0, 5*s, func(i int, at time.Duration) []event.Event {
				const ip, rn = "192.0.2.80", "app.example.com"
				switch {
				case i%120 == 60:
					return smtpSession(at, ip, smtpd, rn, "ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4", func(at time.Duration) event.Event {
						return ev(at, ip, event.KindReject, reason(event.ReasonUnknownRecipient), to(fmt.Sprintf("typo%d@example.org", i)), stage("RCPT"))
					})
				case i%720 == 300:
					return smtpSession(at, ip, smtpd, rn, "ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4", func(at time.Duration) event.Event {
						return ev(at, ip, event.KindReject, reason(event.ReasonSenderNonFQDN), code(504), from("www-data@localhost"), to("orders@example.org"), stage("RCPT"))
					})
				case i%50 == 7:
					return one(ev(at, ip, event.KindRateLimit, detail(event.LimitMessageRate), count(61), noAbuse()))
				}
				return one(ev(at, ip, event.KindConnect, name(rn)), received(ip, rn)(at+s),
					ev(at+2*s, ip, event.KindLostConnection, stage("END-OF-MESSAGE"), noAbuse()))
			}),
		},
		{
			name: "laptop with a non-FQDN HELO on submission",
			events: repeatEvery(48, 0, 10*m, func(i int, at time.Duration) []event.Event {
				const ip = "192.0.2.99"
				out := smtpSession(at, ip, submission, "unknown", "ehlo=2 starttls=1 auth=1 mail=1 rcpt=2 data=1 quit=1 commands=9",
					func(at time.Duration) event.Event {
						return ev(at, ip, event.KindHostnameMismatch, name("dyn-99.isp.example"), noAbuse())
					},
					func(at time.Duration) event.Event {
						return ev(at, ip, event.KindSASLLogin, service(submission), user("alice@example.com"))
					}, received(ip, "unknown"))
				for k := range out {
					out[k].Helo = "DESKTOP-7QX2L"
				}
				if i%6 == 0 { // flaky wifi on wake-up
					out = append(out, ev(at+5*m, ip, event.KindLostConnection, stage("EHLO"), service(submission)))
				}
				return out
			}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, e := run(t, DefaultConfig(), tc.events)
			if len(got) != 0 {
				t.Errorf("decided: %s", strings.Join(got, "\n"))
			}
			if e.Stats().Events != uint64(len(tc.events)) {
				t.Errorf("events observed %d, want %d", e.Stats().Events, len(tc.events))
			}
		})
	}
}
