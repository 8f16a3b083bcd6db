package detectors

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/mxguard/mxguard/internal/event"
)

var t0 = time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)

// ev builds an event at t0+d; opts tweak it. Raw is a readable line.
func ev(d time.Duration, ip string, k event.Kind, opts ...func(*event.Event)) event.Event {
	e := event.Event{Time: t0.Add(d), Client: netip.MustParseAddr(ip), Kind: k, Service: "smtpd"}
	switch k {
	case event.KindConnect, event.KindDisconnect, event.KindPSConnect, event.KindPSPass,
		event.KindSASLLogin, event.KindReceived:
	default:
		e.Abuse = true
	}
	for _, o := range opts {
		o(&e)
	}
	e.Raw = fmt.Sprintf("%s %s %s %s %s %s %d", e.Time.Format(time.Stamp), ip, k, e.Reason, e.Stage, e.To, e.Count)
	return e
}

func reason(r event.Reason) func(*event.Event) {
	return func(e *event.Event) {
		e.Reason = r
		e.Code = 554
		if r == event.ReasonGreylisted || r == event.ReasonServiceUnavailable {
			e.Abuse = false
			e.Code = 450
		}
	}
}
func to(a string) func(*event.Event)     { return func(e *event.Event) { e.To = a } }
func stage(s string) func(*event.Event)  { return func(e *event.Event) { e.Stage = s } }
func count(n int) func(*event.Event)     { return func(e *event.Event) { e.Count = n } }
func detail(s string) func(*event.Event) { return func(e *event.Event) { e.Detail = s } }
func noAbuse() func(*event.Event)        { return func(e *event.Event) { e.Abuse = false } }
func unknown(a string) []func(*event.Event) {
	return []func(*event.Event){reason(event.ReasonUnknownRecipient), to(a), stage("RCPT")}
}

// every repeats make(i) for i in [0,n), i minutes apart starting at start.
func every(n int, start, step time.Duration, mk func(i int, at time.Duration) event.Event) []event.Event {
	out := make([]event.Event, n)
	for i := range out {
		out[i] = mk(i, start+time.Duration(i)*step)
	}
	return out
}

func cat(ls ...[]event.Event) []event.Event {
	var out []event.Event
	for _, l := range ls {
		out = append(out, l...)
	}
	return out
}

func one(es ...event.Event) []event.Event { return es }

func summary(i int, d Decision) string {
	s := fmt.Sprintf("%d: %s %s n=%d", i, d.Detector, d.Prefix, d.Evidence)
	if d.Warn {
		s += " warn"
	}
	return s
}

func run(t *testing.T, cfg Config, events []event.Event) ([]string, []Decision, *Engine) {
	t.Helper()
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var all []Decision
	for i, x := range events {
		for _, d := range e.Observe(x) {
			got = append(got, summary(i, d))
			all = append(all, d)
		}
	}
	return got, all, e
}

const ipA, ipB = "203.0.113.7", "198.51.100.9"

func TestDetectors(t *testing.T) {
	m := time.Minute
	tests := []struct {
		name   string
		cfg    func(*Config)
		events []event.Event
		want   []string
	}{
		// dictionary
		{name: "dictionary/5 distinct in 10m", events: every(5, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
		}), want: []string{"4: dictionary 203.0.113.7/32 n=5"}},
		{name: "dictionary/4 distinct is not enough", events: every(4, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
		})},
		{name: "dictionary/one recipient repeated", events: every(12, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, unknown("sales@example.org")...)
		})},
		{name: "dictionary/case folded", events: every(8, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, unknown([]string{"Bob@example.org", "bob@example.org", "BOB@EXAMPLE.ORG", "al@example.org"}[i%4])...)
		})},
		{name: "dictionary/window expiry", events: cat(
			every(4, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
			}),
			one(ev(13*m, ipA, event.KindReject, unknown("late@example.org")...)))},
		{name: "dictionary/clients counted apart", events: every(8, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, []string{ipA, ipB}[i%2], event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
		})},
		{name: "dictionary/dedupe until the window restarts", events: every(20, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
		}), want: []string{"4: dictionary 203.0.113.7/32 n=5", "18: dictionary 203.0.113.7/32 n=5"}},
		{name: "dictionary/warn mode", cfg: func(c *Config) { c.Dictionary.Mode = ModeWarn },
			events: every(5, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
			}), want: []string{"4: dictionary 203.0.113.7/32 n=5 warn"}},
		{name: "dictionary/disabled", cfg: func(c *Config) { c.Dictionary.Enabled = false },
			events: every(5, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
			})},
		{name: "dictionary/v4-mapped is the same client", events: every(5, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, []string{ipA, "::ffff:" + ipA}[i%2], event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
		}), want: []string{"4: dictionary 203.0.113.7/32 n=5"}},

		{name: "dictionary/forgiven by login", events: cat(
			every(4, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
			}),
			one(ev(4*m, ipA, event.KindSASLLogin)),
			every(4, 5*m, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("v%d@example.org", i))...)
			}))},
		{name: "dictionary/not forgiven by an accepted message", events: cat(
			every(4, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...)
			}),
			one(ev(4*m, ipA, event.KindReceived)),
			one(ev(5*m, ipA, event.KindReject, unknown("v@example.org")...))),
			want: []string{"5: dictionary 203.0.113.7/32 n=5"}},

		// error_burst
		{name: "error_burst/6 within 5m", events: every(6, 0, 30*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonSenderAccess), stage("MAIL"))
		}), want: []string{"5: error_burst 203.0.113.7/32 n=6"}},
		{name: "error_burst/one a minute never fills 5m", events: every(30, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonSenderAccess), stage("MAIL"))
		})},
		{name: "error_burst/too many errors decides at once", events: one(
			ev(0, ipA, event.KindReject, reason(event.ReasonClientAccess)),
			ev(m, ipA, event.KindTooManyErrors, stage("RCPT"))),
			want: []string{"1: error_burst 203.0.113.7/32 n=2"}},
		{name: "error_burst/an accepted message takes back one error", events: cat(
			every(5, 0, 10*time.Second, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, reason(event.ReasonSenderAccess), stage("MAIL"))
			}),
			one(ev(time.Minute, ipA, event.KindReceived)),
			every(2, 70*time.Second, 10*time.Second, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, reason(event.ReasonSenderAccess), stage("MAIL"))
			})),
			want: []string{"7: error_burst 203.0.113.7/32 n=6"}},
		{name: "error_burst/lost connection after RCPT counts", events: every(6, 0, 10*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindLostConnection, stage("RCPT"))
		}), want: []string{"5: error_burst 203.0.113.7/32 n=6"}},
		{name: "error_burst/lost connection after CONNECT does not", events: every(30, 0, 10*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindLostConnection, stage("CONNECT"))
		})},
		{name: "error_burst/lost connection after DATA is not abuse", events: every(30, 0, 10*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindLostConnection, stage("DATA"), noAbuse())
		})},

		// never ban
		{name: "never/monitoring probe every minute", events: every(240, 0, 30*time.Second, func(i int, at time.Duration) event.Event {
			if i%2 == 0 {
				return ev(at, ipA, event.KindConnect)
			}
			return ev(at, ipA, event.KindDisconnect, detail("quit=1 commands=1"))
		})},
		{name: "never/probe quitting without a word", cfg: func(c *Config) { c.SASLBruteforce.CountDisconnectAuth = true },
			events: every(240, 0, 30*time.Second, func(i int, at time.Duration) event.Event {
				if i%2 == 0 {
					return ev(at, ipA, event.KindConnect)
				}
				return ev(at, ipA, event.KindDisconnect, detail("ehlo=1 quit=1 commands=2"))
			})},
		{name: "never/one mistyped recipient", events: one(
			ev(0, ipA, event.KindConnect),
			ev(1*time.Second, ipA, event.KindReject, unknown("jhon@example.org")...),
			ev(2*time.Second, ipA, event.KindReceived),
			ev(3*time.Second, ipA, event.KindDisconnect, count(1), detail("ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6")))},
		{name: "never/one wrong password then login", events: one(
			ev(0, ipA, event.KindSASLFail, detail("bob")),
			ev(1*time.Second, ipA, event.KindDisconnect, count(1), detail("ehlo=1 auth=0/1 quit=1 commands=2/3")),
			ev(30*time.Second, ipA, event.KindSASLLogin, detail("bob")))},
		{name: "never/postscreen 450 4.3.2 after passing", events: every(40, 0, 5*time.Second, func(i int, at time.Duration) event.Event {
			if i%2 == 0 {
				return ev(at, ipA, event.KindPSPass)
			}
			return ev(at, ipA, event.KindReject, reason(event.ReasonServiceUnavailable), stage("RCPT"))
		})},
		{name: "never/greylisted", events: every(40, 0, 5*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonGreylisted), stage("RCPT"))
		})},
		{name: "never/postscreen context", events: every(40, 0, 5*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, []event.Kind{event.KindPSConnect, event.KindPSPass, event.KindConnect}[i%3])
		})},
		{name: "never/DNSBL rank 1 on a busy sender", events: every(30, 0, 10*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindDNSBL, count(1))
		})},

		// pipelining
		{name: "pipelining/first decides, dedupe, again after window", events: one(
			ev(0, ipA, event.KindPipelining, stage("EHLO")),
			ev(10*m, ipA, event.KindPipelining, stage("EHLO")),
			ev(61*m, ipA, event.KindReject, reason(event.ReasonPipelining), stage("DATA"))),
			want: []string{"0: pipelining 203.0.113.7/32 n=1", "2: pipelining 203.0.113.7/32 n=1"}},

		// pregreet
		{name: "pregreet/each protocol failure decides", events: one(
			ev(0, "192.0.2.1", event.KindPregreet, count(11)),
			ev(m, "192.0.2.2", event.KindNonSMTP),
			ev(2*m, "192.0.2.3", event.KindBareNewline),
			ev(3*m, "192.0.2.4", event.KindCommandLimit),
			ev(4*m, "192.0.2.5", event.KindHangup)),
			want: []string{"0: pregreet 192.0.2.1/32 n=1", "1: pregreet 192.0.2.2/32 n=1", "2: pregreet 192.0.2.3/32 n=1", "3: pregreet 192.0.2.4/32 n=1"}},

		// sasl_bruteforce
		{name: "sasl/5 within 10m", events: every(5, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindSASLFail)
		}), want: []string{"4: sasl_bruteforce 203.0.113.7/32 n=5"}},
		{name: "sasl/slow guessing: the long window", events: every(10, 0, 3*m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindSASLFail)
		}), want: []string{"7: sasl_bruteforce 203.0.113.7/32 n=8"}},
		{name: "sasl/low and slow: 8 within 6h", events: every(12, 0, 50*m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindSASLFail)
		}), want: []string{"7: sasl_bruteforce 203.0.113.7/32 n=8"}},
		{name: "sasl/slower than 8 in 6h", events: every(30, 0, 55*m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindSASLFail)
		})},
		{name: "sasl/long window off", cfg: func(c *Config) { c.SASLBruteforce.LongThreshold = 0 }, events: every(10, 0, 3*m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindSASLFail)
		})},
		{name: "sasl/long window off under a lenient threshold", cfg: func(c *Config) { c.SASLBruteforce.Threshold = 8 },
			events: every(10, 0, 3*m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) })},
		{name: "sasl/long window off under a long window", cfg: func(c *Config) { c.SASLBruteforce.Window = Duration(6 * time.Hour) },
			events: every(4, 0, 30*m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) })},
		{name: "sasl/long window forgiven by login", events: cat(
			every(7, 0, 20*m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) }),
			one(ev(3*time.Hour, ipA, event.KindSASLLogin)),
			every(7, 3*time.Hour+m, 20*m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) }))},
		{name: "sasl/forgiven by login", events: cat(
			every(4, 0, m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) }),
			one(ev(4*m+30*time.Second, ipA, event.KindSASLLogin)),
			every(4, 5*m, m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) }))},
		{name: "sasl/not forgiven by an accepted message", events: cat(
			every(4, 0, m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) }),
			one(ev(4*m+30*time.Second, ipA, event.KindReceived)),
			every(1, 5*m, m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) })),
			want: []string{"5: sasl_bruteforce 203.0.113.7/32 n=5"}},
		{name: "sasl/forgiving another client does not help", events: cat(
			every(4, 0, m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) }),
			one(ev(4*m+30*time.Second, ipB, event.KindSASLLogin)),
			every(1, 5*m, m, func(i int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) })),
			want: []string{"5: sasl_bruteforce 203.0.113.7/32 n=5"}},
		{name: "sasl/disconnect stats ignored by default", events: one(
			ev(0, ipA, event.KindDisconnect, count(5), detail("ehlo=1 auth=0/5 quit=1 commands=2/7")))},
		{name: "sasl/disconnect stats when configured", cfg: func(c *Config) { c.SASLBruteforce.CountDisconnectAuth = true }, events: one(
			ev(0, ipA, event.KindDisconnect, count(4), detail("ehlo=1 auth=0/4 quit=1 commands=2/6")),
			ev(m, ipA, event.KindDisconnect, count(1), detail("ehlo=1 auth=1/2 quit=1 commands=3/4"))),
			want: []string{"1: sasl_bruteforce 203.0.113.7/32 n=5"}},
		{name: "sasl/many addresses of a /24 without per_prefix", events: every(12, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, fmt.Sprintf("203.0.113.%d", 10+i), event.KindSASLFail)
		})},
		{name: "sasl/per_prefix v4", cfg: func(c *Config) { c.SASLBruteforce.PerPrefix = true }, events: every(12, 0, 30*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, fmt.Sprintf("203.0.113.%d", 10+i), event.KindSASLFail)
		}), want: []string{"9: sasl_bruteforce 203.0.113.0/24 n=10"}},
		{name: "sasl/per_prefix v6", cfg: func(c *Config) { c.SASLBruteforce.PerPrefix = true }, events: every(10, 0, 30*time.Second, func(i int, at time.Duration) event.Event {
			return ev(at, fmt.Sprintf("2001:db8:1:2::%x", 10+i), event.KindSASLFail)
		}), want: []string{"9: sasl_bruteforce 2001:db8:1:2::/64 n=10"}},

		// relay_probe
		{name: "relay/3 within 1h", events: every(3, 0, 20*m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonRelayDenied), stage("RCPT"))
		}), want: []string{"2: relay_probe 203.0.113.7/32 n=3"}},
		{name: "relay/2 within 1h", events: every(4, 0, 40*m, func(i int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonRelayDenied), stage("RCPT"))
		})},
		{name: "relay/forgiven by login", events: cat(
			every(2, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, reason(event.ReasonRelayDenied), stage("RCPT"))
			}),
			one(ev(3*m, ipA, event.KindSASLLogin)),
			one(ev(4*m, ipA, event.KindReject, reason(event.ReasonRelayDenied), stage("RCPT"))))},

		// dnsbl
		{name: "dnsbl/rank", events: one(
			ev(0, "192.0.2.1", event.KindDNSBL, count(2)),
			ev(0, "192.0.2.2", event.KindDNSBL, count(3)),
			ev(m, "192.0.2.2", event.KindDNSBL, count(5))),
			want: []string{"1: dnsbl 192.0.2.2/32 n=1"}},
		{name: "dnsbl/smtpd blocked using", events: one(
			ev(0, ipA, event.KindReject, reason(event.ReasonDNSBL), detail("zen.spamhaus.org"), stage("RCPT"))),
			want: []string{"0: dnsbl 203.0.113.7/32 n=1"}},
		{name: "dnsbl/rank threshold configured", cfg: func(c *Config) { c.DNSBL.Threshold = 6 }, events: one(
			ev(0, ipA, event.KindDNSBL, count(5)),
			ev(m, ipB, event.KindDNSBL, count(6))),
			want: []string{"1: dnsbl 198.51.100.9/32 n=1"}},

		// bad_helo
		{name: "bad_helo/2 within 1h", events: one(
			ev(0, ipA, event.KindReject, reason(event.ReasonHeloInvalid), stage("RCPT")),
			ev(30*m, ipA, event.KindReject, reason(event.ReasonHeloNonFQDN), stage("RCPT"))),
			want: []string{"1: bad_helo 203.0.113.7/32 n=2"}},
		{name: "bad_helo/2 hours apart", events: one(
			ev(0, ipA, event.KindReject, reason(event.ReasonHeloInvalid), stage("RCPT")),
			ev(2*time.Hour, ipA, event.KindReject, reason(event.ReasonHeloInvalid), stage("RCPT")))},

		// prefix escalation
		{name: "escalation/off by default", events: every(6, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, fmt.Sprintf("203.0.113.%d", 10+i), event.KindPregreet)
		}), want: []string{"0: pregreet 203.0.113.10/32 n=1", "1: pregreet 203.0.113.11/32 n=1", "2: pregreet 203.0.113.12/32 n=1",
			"3: pregreet 203.0.113.13/32 n=1", "4: pregreet 203.0.113.14/32 n=1", "5: pregreet 203.0.113.15/32 n=1"}},
		{name: "escalation/v4 /24", cfg: func(c *Config) { c.PrefixEscalation.Enabled = true }, events: every(6, 0, m, func(i int, at time.Duration) event.Event {
			return ev(at, fmt.Sprintf("203.0.113.%d", 10+i), event.KindPregreet)
		}), want: []string{"0: pregreet 203.0.113.10/32 n=1", "1: pregreet 203.0.113.11/32 n=1", "2: pregreet 203.0.113.12/32 n=1",
			"3: pregreet 203.0.113.13/32 n=1", "4: pregreet 203.0.113.14/32 n=1", "4: prefix_escalation 203.0.113.0/24 n=5",
			"5: pregreet 203.0.113.15/32 n=1"}},
		{name: "escalation/same address twice counts once", cfg: func(c *Config) { c.PrefixEscalation.Enabled = true; c.PrefixEscalation.Count = 2 },
			events: one(
				ev(0, ipA, event.KindPregreet),
				ev(m, ipA, event.KindPipelining),
				ev(2*m, "203.0.113.8", event.KindPipelining)),
			want: []string{"0: pregreet 203.0.113.7/32 n=1", "1: pipelining 203.0.113.7/32 n=1", "2: pipelining 203.0.113.8/32 n=1",
				"2: prefix_escalation 203.0.113.0/24 n=2"}},
		{name: "escalation/v6 /64 and window", cfg: func(c *Config) {
			c.PrefixEscalation.Enabled = true
			c.PrefixEscalation.Count = 3
			c.PrefixEscalation.Window = Duration(time.Hour)
		}, events: one(
			ev(0, "2001:db8:1:2::1", event.KindPregreet),
			ev(30*m, "2001:db8:1:2::2", event.KindPregreet),
			ev(61*m, "2001:db8:1:2::3", event.KindPregreet), // first one has left the window
			ev(62*m, "2001:db8:1:3::4", event.KindPregreet), // other /64
			ev(63*m, "2001:db8:1:2::5", event.KindPregreet)),
			want: []string{"0: pregreet 2001:db8:1:2::1/128 n=1", "1: pregreet 2001:db8:1:2::2/128 n=1", "2: pregreet 2001:db8:1:2::3/128 n=1",
				"3: pregreet 2001:db8:1:3::4/128 n=1", "4: pregreet 2001:db8:1:2::5/128 n=1", "4: prefix_escalation 2001:db8:1:2::/64 n=3"}},
		{name: "escalation/warn decisions do not count", cfg: func(c *Config) {
			c.PrefixEscalation.Enabled = true
			c.PrefixEscalation.Count = 2
			c.Pregreet.Mode = ModeWarn
		}, events: one(
			ev(0, "203.0.113.1", event.KindPregreet),
			ev(m, "203.0.113.2", event.KindPregreet)),
			want: []string{"0: pregreet 203.0.113.1/32 n=1 warn", "1: pregreet 203.0.113.2/32 n=1 warn"}},
		{name: "escalation/warn mode", cfg: func(c *Config) {
			c.PrefixEscalation.Enabled = true
			c.PrefixEscalation.Count = 2
			c.PrefixEscalation.Mode = ModeWarn
		}, events: one(
			ev(0, "203.0.113.1", event.KindPregreet),
			ev(m, "203.0.113.2", event.KindPregreet)),
			want: []string{"0: pregreet 203.0.113.1/32 n=1", "1: pregreet 203.0.113.2/32 n=1", "1: prefix_escalation 203.0.113.0/24 n=2 warn"}},

		// odds and ends
		{name: "invalid client is ignored", events: []event.Event{{Time: t0, Kind: event.KindPregreet, Abuse: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			got, _, _ := run(t, cfg, tc.events)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("decisions:\ngot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestReasonAndEvidence(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EvidenceLines = 2
	var events []event.Event
	for i := range 5 {
		events = append(events, ev(time.Duration(i)*time.Minute, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@example.org", i))...))
	}
	_, ds, _ := run(t, cfg, events)
	if len(ds) != 1 {
		t.Fatalf("got %d decisions, want 1", len(ds))
	}
	d := ds[0]
	if d.Reason != "5 unknown recipients within 10m" {
		t.Errorf("reason %q", d.Reason)
	}
	if !d.Time.Equal(t0.Add(4 * time.Minute)) {
		t.Errorf("time %v", d.Time)
	}
	want := []string{events[3].Raw, events[4].Raw}
	if fmt.Sprint(d.Lines) != fmt.Sprint(want) {
		t.Errorf("lines %q, want %q", d.Lines, want)
	}

	cfg.EvidenceLines = 0
	_, ds, _ = run(t, cfg, events)
	if len(ds) != 1 || len(ds[0].Lines) != 0 {
		t.Errorf("evidence_lines 0: got %+v", ds)
	}
}

func TestReasons(t *testing.T) {
	m := time.Minute
	tests := []struct {
		events []event.Event
		want   string
	}{
		{one(ev(0, ipA, event.KindTooManyErrors, stage("RCPT"))), "too many errors after RCPT"},
		{one(ev(0, ipA, event.KindPipelining, stage("EHLO"))), "improper command pipelining after EHLO"},
		{one(ev(0, ipA, event.KindPregreet, count(11))), "pregreet"},
		{one(ev(0, ipA, event.KindNonSMTP)), "non-SMTP command"},
		{one(ev(0, ipA, event.KindDNSBL, count(4))), "postscreen DNSBL rank 4"},
		{one(ev(0, ipA, event.KindReject, reason(event.ReasonDNSBL), detail("zen.spamhaus.org"))), "listed in zen.spamhaus.org"},
		{every(5, 0, m, func(int, time.Duration) event.Event { return ev(0, ipA, event.KindSASLFail) }), "5 SASL authentication failures within 10m"},
		{every(3, 0, m, func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonRelayDenied))
		}), "3 relay attempts within 1h"},
		{every(2, 0, m, func(_ int, at time.Duration) event.Event {
			return ev(at, ipA, event.KindReject, reason(event.ReasonHeloInvalid))
		}), "2 HELO rejects within 1h"},
	}
	for _, tc := range tests {
		_, ds, _ := run(t, DefaultConfig(), tc.events)
		if len(ds) == 0 || ds[0].Reason != tc.want {
			t.Errorf("got %+v, want reason %q", ds, tc.want)
		}
	}
}

// Event strings may alias a reused read buffer; decisions must not.
func TestEvidenceIsCloned(t *testing.T) {
	e, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := []byte("Nov 25 10:00:00 mx postfix/postscreen[1]: PREGREET 11 after 0.1 from [203.0.113.7]:4242: EHLO x\\r\\n")
	x := ev(0, ipA, event.KindPregreet)
	x.Raw = unsafe.String(&buf[0], len(buf))
	want := strings.Clone(x.Raw)
	ds := e.Observe(x)
	for i := range buf {
		buf[i] = 'X'
	}
	if len(ds) != 1 || len(ds[0].Lines) != 1 || ds[0].Lines[0] != want {
		t.Fatalf("evidence aliased the buffer: %+v", ds)
	}
}

func TestLRUCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxClients = 3
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(at time.Duration, ip string) []Decision { return e.Observe(ev(at, ip, event.KindSASLFail)) }
	// A has 4 failures, then B, C, D arrive with one each: the table
	// drops the state nearest to no decision (B), not A.
	for i := range 4 {
		fail(time.Duration(i)*time.Second, ipA)
	}
	fail(10*time.Second, "192.0.2.1")
	fail(11*time.Second, "192.0.2.2")
	fail(12*time.Second, "192.0.2.3")
	if ds := fail(13*time.Second, ipA); len(ds) != 1 {
		t.Errorf("the client nearest to a decision was evicted: %+v", ds)
	}
	if _, ok := e.clients.m[netip.MustParsePrefix("192.0.2.1/32")]; ok {
		t.Errorf("the oldest of the least evidenced clients was kept")
	}
	st := e.Stats()
	if st.Clients != 3 || st.Evicted != 1 {
		t.Errorf("stats %+v, want 3 clients, 1 evicted", st)
	}

	// Churn of new addresses, one drop each, leaves a 6h SASL window alone.
	cfg.MaxClients = 10
	e, _ = New(cfg, nil)
	for i := range 7 {
		fail(time.Duration(i)*40*time.Minute, ipA) // 7 in 4h: idle from 5h on
	}
	for i := range 200 {
		at := 5*time.Hour + time.Duration(i)*time.Second
		e.Observe(ev(at, fmt.Sprintf("2001:db8::%x", i), event.KindLostConnection, stage("EHLO")))
	}
	if ds := fail(5*time.Hour+10*time.Minute, ipA); len(ds) != 1 || ds[0].Reason != "8 SASL authentication failures within 6h" {
		t.Errorf("the long window was evicted by churn: %+v", ds)
	}

	// Recently seen clients stay: touch A between newcomers.
	e, _ = New(cfg, nil)
	for i := range 4 {
		fail(time.Duration(i)*time.Second, ipA)
		fail(time.Duration(i)*time.Second, fmt.Sprintf("192.0.2.%d", 10+i))
	}
	if ds := fail(5*time.Second, ipA); len(ds) != 1 {
		t.Errorf("recently seen client was evicted: %+v", ds)
	}
}

// TestExpiry: a client is dropped once every window it holds has passed;
// the long windows (sasl_bruteforce's 6h, a score's four half-lives) keep
// only the clients that use them.
func TestExpiry(t *testing.T) {
	h := time.Hour
	tests := []struct {
		name  string
		kind  event.Kind
		opts  []func(*event.Event)
		early time.Duration // all still tracked
		late  time.Duration // all but the newest 49 dropped
	}{
		{"ordinary windows: 1h", event.KindReject, []func(*event.Event){reason(event.ReasonSenderAccess), stage("MAIL")}, 59 * time.Minute, h},
		{"sasl_bruteforce's long window", event.KindSASLFail, nil, 5 * h, 6 * h},
		{"a score: four half-lives", event.KindDisconnect, []func(*event.Event){detail("mail=1 rcpt=1 data=1 quit=1 commands=4")}, 119 * time.Minute, 2 * h},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(DefaultConfig(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 100 {
				e.Observe(ev(time.Duration(i)*time.Second, fmt.Sprintf("192.0.2.%d", i), tc.kind, tc.opts...))
			}
			if st := e.Stats(); st.Clients != 100 {
				t.Fatalf("clients %d, want 100", st.Clients)
			}
			e.Observe(ev(tc.early, ipA, event.KindConnect)) // moves the clock only
			if st := e.Stats(); st.Clients != 100 || st.Expired != 0 {
				t.Errorf("at %s: stats %+v, want 100 clients, none expired", tc.early, st)
			}
			e.Observe(ev(tc.late+50*time.Second, ipA, event.KindReject, reason(event.ReasonSenderAccess)))
			if st := e.Stats(); st.Clients != 50 || st.Expired != 51 {
				t.Errorf("at %s: stats %+v, want 50 clients (49 young + 1 new), 51 expired", tc.late, st)
			}
			st := e.Stats()
			if st.Events != 102 {
				t.Errorf("events %d", st.Events)
			}
		})
	}
}

func TestStats(t *testing.T) {
	_, _, e := run(t, DefaultConfig(), one(
		ev(0, "192.0.2.1", event.KindPregreet),
		ev(0, "192.0.2.2", event.KindPregreet),
		ev(0, "192.0.2.3", event.KindTooManyErrors),
		ev(0, "192.0.2.4", event.KindConnect)))
	st := e.Stats()
	if st.Decisions[Pregreet] != 2 || st.Decisions[ErrorBurst] != 1 || st.Decisions[Dictionary] != 0 {
		t.Errorf("decisions %v", st.Decisions)
	}
	if _, ok := st.Decisions[PrefixEscalation]; !ok || len(st.Decisions) != len(Names())+1 {
		t.Errorf("decisions keys %v", st.Decisions)
	}
	if st.Clients != 3 {
		t.Errorf("context events must not create clients: %d", st.Clients)
	}
}

func TestAuthFailures(t *testing.T) {
	for in, want := range map[string]int{
		"ehlo=1 auth=0/3 quit=1 commands=2/5": 3,
		"auth=0/1":                            1,
		"ehlo=1 auth=1 quit=1 commands=3":     0,
		"ehlo=1 auth=1/2 rcpt=0/1":            1,
		"xauth=0/4 auth=0/2":                  2,
		"xauth=0/4":                           0,
		"auth=a/2":                            0,
		"auth=3/2":                            0,
		"":                                    0,
	} {
		if got := authFailures(in); got != want {
			t.Errorf("authFailures(%q) = %d, want %d", in, got, want)
		}
	}
}

// Four goroutines feed the same 50 clients at once. Every client gets 16
// SASL failures within 200 s, so whatever the interleaving each decides
// sasl_bruteforce once (at its 5th failure), error_burst once (at its
// 6th) and sasl_spray once (its 4th username), then stays muted for the
// window; with prefix escalation on, the /24 escalates once, at its 5th
// decided address.
func TestConcurrentUse(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PrefixEscalation.Enabled = true
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	returned := map[string]uint64{}
	for g := range 4 {
		wg.Go(func() {
			got := map[string]uint64{}
			for i := range 200 {
				for _, d := range e.Observe(ev(time.Duration(i)*time.Second, fmt.Sprintf("192.0.2.%d", i%50), event.KindSASLFail, detail(fmt.Sprint(g)))) {
					got[d.Detector]++
				}
				_ = e.Stats()
			}
			mu.Lock()
			for k, n := range got {
				returned[k] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	// Each client also fails with four usernames ("0" to "3"): sasl_spray.
	want := map[string]uint64{SASLBruteforce: 50, ErrorBurst: 50, SASLSpray: 50, PrefixEscalation: 1}
	if !maps.Equal(returned, want) {
		t.Errorf("decisions returned by Observe: %v, want %v", returned, want)
	}
	st := e.Stats()
	if st.Events != 800 {
		t.Errorf("stats: %d events, want 800", st.Events)
	}
	for name, n := range st.Decisions {
		if n != want[name] {
			t.Errorf("stats: %d %s decisions, want %d", n, name, want[name])
		}
	}
}

// A client kept only for sasl_bruteforce's long window is the first to go
// when the table is full, and one seen again leaves the idle list with its
// failures.
func TestIdleStates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxClients = 3
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(at time.Duration, ip string) []Decision { return e.Observe(ev(at, ip, event.KindSASLFail)) }
	for i := range 7 {
		fail(time.Duration(i)*20*time.Minute, ipA) // 7 in 2h: idle after 3h
	}
	fail(4*time.Hour, "192.0.2.1")
	fail(4*time.Hour, "192.0.2.2")
	if st := e.Stats(); st.Clients != 3 || st.Expired != 0 {
		t.Fatalf("stats %+v: want A idle but kept", st)
	}
	if ds := fail(4*time.Hour+time.Minute, ipA); len(ds) != 1 || ds[0].Reason != "8 SASL authentication failures within 6h" {
		t.Fatalf("A back from the idle list: %+v, want the long-window decision", ds)
	}
	// A idle again (its window emptied by the decision: dropped at once);
	// B idle with one failure, then a newcomer evicts the idle one.
	fail(5*time.Hour+2*time.Minute, "192.0.2.3")
	st := e.Stats()
	if st.Clients != 3 || st.Evicted != 0 || st.Expired != 1 {
		t.Fatalf("stats %+v: want A expired, 1, 2, 3 kept", st)
	}
	fail(5*time.Hour+3*time.Minute, "192.0.2.4")
	if _, ok := e.clients.m[netip.MustParsePrefix("192.0.2.1/32")]; ok || e.Stats().Evicted != 1 {
		t.Errorf("the idle client was not the one evicted: %+v", e.Stats())
	}
}
