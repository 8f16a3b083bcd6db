package detectors

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logparse"
)

// decideLines parses lines with one logparse.Parser, as the daemon does,
// feeds the events to an engine with cfg and returns its decisions as
// "LINE: DETECTOR PREFIX".
func decideLines(t *testing.T, cfg Config, lines []string) []string {
	t.Helper()
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := logparse.NewParser(time.UTC, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	var got []string
	for i, l := range lines {
		ev, err := p.Parse(l)
		if err != nil {
			continue
		}
		for _, d := range e.Observe(ev.Clone()) {
			got = append(got, fmt.Sprintf("%d: %s %s", i, d.Detector, d.Prefix))
		}
	}
	return got
}

// stampAt is a syslog time stamp sec seconds after 10:00:00.
func stampAt(sec int) string {
	return time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(sec) * time.Second).Format(time.Stamp)
}

// linesN repeats f for i in [0, n).
func linesN(n int, f func(i int) []string) []string {
	var out []string
	for i := range n {
		out = append(out, f(i)...)
	}
	return out
}

// failedHandshake is one STARTTLS handshake that fails on smtpd process
// pid at sec, as Postfix 3.x with OpenSSL 3 logs it.
func failedHandshake(sec, pid int, svc, ip string) []string {
	return []string{
		fmt.Sprintf("%s mx postfix/%s[%d]: connect from old.example.net[%s]", stampAt(sec), svc, pid, ip),
		fmt.Sprintf("%s mx postfix/%s[%d]: SSL_accept error from old.example.net[%s]: -1", stampAt(sec), svc, pid, ip),
		fmt.Sprintf("%s mx postfix/%s[%d]: warning: TLS library problem: error:0A000102:SSL routines::unsupported protocol:../ssl/statem/statem_srvr.c:1657:", stampAt(sec), svc, pid),
		fmt.Sprintf("%s mx postfix/%s[%d]: lost connection after STARTTLS from old.example.net[%s]", stampAt(sec), svc, pid, ip),
		fmt.Sprintf("%s mx postfix/%s[%d]: disconnect from old.example.net[%s] ehlo=1 starttls=0/1 commands=1/2", stampAt(sec), svc, pid, ip),
	}
}

// smtpsProbe is a failed handshake on the wrapper-mode port: no STARTTLS,
// the connection is lost "after CONNECT".
func smtpsProbe(sec, pid int, ip string) []string {
	return []string{
		fmt.Sprintf("%s mx postfix/smtps/smtpd[%d]: connect from monitor.example.net[%s]", stampAt(sec), pid, ip),
		fmt.Sprintf("%s mx postfix/smtps/smtpd[%d]: SSL_accept error from monitor.example.net[%s]: -1", stampAt(sec), pid, ip),
		fmt.Sprintf("%s mx postfix/smtps/smtpd[%d]: warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while reading:../ssl/record/rec_layer_s3.c:308:", stampAt(sec), pid),
		fmt.Sprintf("%s mx postfix/smtps/smtpd[%d]: lost connection after CONNECT from monitor.example.net[%s]", stampAt(sec), pid, ip),
		fmt.Sprintf("%s mx postfix/smtps/smtpd[%d]: disconnect from monitor.example.net[%s] commands=0/0", stampAt(sec), pid, ip),
	}
}

func milterReject(sec, i int, ip, reply string) []string {
	return []string{fmt.Sprintf("%s mx postfix/cleanup[200]: 4F2A31C0B%d: milter-reject: END-OF-MESSAGE from mx.sender.example[%s]: %s; from=<list@sender.example> to=<u%d@example.org> proto=ESMTP helo=<mx.sender.example>", stampAt(sec), i, ip, reply, i)}
}

func clientReject(sec, i int, svc, ip, reply string) []string {
	return []string{fmt.Sprintf("%s mx postfix/%s[%d]: NOQUEUE: reject: RCPT from mx.sender.example[%s]: %s; from=<list@sender.example> to=<u%d@example.org> proto=ESMTP helo=<mx.sender.example>", stampAt(sec), svc, 300+i, ip, reply, i)}
}

func received(sec, pid, i int, svc, ip string) []string {
	return []string{fmt.Sprintf("%s mx postfix/%s[%d]: 7F2A31C%03X: client=mail.example.net[%s]", stampAt(sec), svc, pid, i, ip)}
}

func login(sec, pid, i int, ip, user string) []string {
	return []string{fmt.Sprintf("%s mx postfix/submission/smtpd[%d]: 6F2A31C%03X: client=gw.office.example[%s], sasl_method=PLAIN, sasl_username=%s", stampAt(sec), pid, i, ip, user)}
}

func saslFail(sec, pid int, ip, user string) []string {
	return []string{fmt.Sprintf("%s mx postfix/submission/smtpd[%d]: warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=%s", stampAt(sec), pid, ip, user)}
}

func lostAfter(sec, pid int, stage, ip string) []string {
	return []string{fmt.Sprintf("%s mx postfix/smtpd[%d]: lost connection after %s from host.example.net[%s]", stampAt(sec), pid, stage, ip)}
}

func healthCheck(sec, pid int, ip string) []string {
	return []string{
		fmt.Sprintf("%s mx postfix/smtpd[%d]: connect from lb1.example.net[%s]", stampAt(sec), pid, ip),
		fmt.Sprintf("%s mx postfix/smtpd[%d]: lost connection after CONNECT from lb1.example.net[%s]", stampAt(sec), pid, ip),
		fmt.Sprintf("%s mx postfix/smtpd[%d]: disconnect from lb1.example.net[%s] commands=0/0", stampAt(sec), pid, ip),
	}
}

func concurrencyLimit(sec, pid, n int, ip string) []string {
	return []string{fmt.Sprintf("%s mx postfix/smtpd[%d]: warning: Connection concurrency limit exceeded: %d from mail-25.relay.example.net[%s] for service smtp", stampAt(sec), pid, n, ip)}
}

// TestPostfixLines runs real Postfix line forms through logparse and the
// engine with the defaults: honest senders that leave many non-abuse or
// temporary lines must not be decided, and the abuse next to them must.
func TestPostfixLines(t *testing.T) {
	tests := []struct {
		name  string
		cfg   func(*Config)
		lines []string
		want  []string // detectors decided, "LINE: DETECTOR PREFIX"
	}{
		{name: "TLS library problem at the end of a relay's delivered sessions", lines: linesN(10, func(i int) []string {
			s, pid, ip := i*6, 3000+i%4, "198.51.100.25"
			return []string{
				fmt.Sprintf("%s mx postfix/smtpd[%d]: connect from mail-25.relay.example.net[%s]", stampAt(s), pid, ip),
				fmt.Sprintf("%s mx postfix/smtpd[%d]: Anonymous TLS connection established from mail-25.relay.example.net[%s]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)", stampAt(s), pid, ip),
				fmt.Sprintf("%s mx postfix/smtpd[%d]: 4F2A31C%03X: client=mail-25.relay.example.net[%s]", stampAt(s+1), pid, i, ip),
				fmt.Sprintf("%s mx postfix/smtpd[%d]: warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while reading:../ssl/record/rec_layer_s3.c:308:", stampAt(s+2), pid),
				fmt.Sprintf("%s mx postfix/smtpd[%d]: disconnect from mail-25.relay.example.net[%s] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 commands=6", stampAt(s+2), pid, ip),
			}
		})},
		{name: "TLS library problems borrowed by pid never count alone", lines: linesN(10, func(i int) []string {
			pid := 3000 + i%4
			return []string{
				fmt.Sprintf("%s mx postfix/smtpd[%d]: connect from mail-25.relay.example.net[198.51.100.25]", stampAt(i*5), pid),
				fmt.Sprintf("%s mx postfix/smtpd[%d]: warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while reading:../ssl/record/rec_layer_s3.c:308:", stampAt(i*5+1), pid),
			}
		})},
		{name: "milter temporary reject (soft reject, greylisting)", lines: linesN(3, func(i int) []string {
			return milterReject(i*60, i, "192.0.2.60", "4.7.1 Try again later")
		})},
		{name: "milter outage: milter_default_action = tempfail", lines: linesN(3, func(i int) []string {
			return milterReject(i*300, i, "209.85.167.170", "4.7.1 Service unavailable")
		})},
		{name: "milter permanent reject is content_reject", lines: linesN(3, func(i int) []string {
			return milterReject(i*300, i, "192.0.2.62", "5.7.1 Spam message rejected")
		}), want: []string{"2: content_reject 192.0.2.62/32"}},
		{name: "greylisting in smtpd_client_restrictions", lines: linesN(3, func(i int) []string {
			return clientReject(i, i, "smtpd", "192.0.2.61", "450 4.7.1 <mx.sender.example[192.0.2.61]>: Client host rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.org.html")
		})},
		{name: "temporary client reject of a policy service", lines: linesN(3, func(i int) []string {
			return clientReject(i*60, i, "smtpd", "192.0.2.63", "451 4.7.1 <mx.sender.example[192.0.2.63]>: Client host rejected: Try again later")
		})},
		{name: "access list REJECT is admin_reject", lines: linesN(3, func(i int) []string {
			return clientReject(i*60, i, "smtpd", "192.0.2.64", "554 5.7.1 <mx.sender.example[192.0.2.64]>: Client host rejected: Access denied")
		}), want: []string{"2: admin_reject 192.0.2.64/32"}},
		{name: "submission permit_sasl_authenticated, reject behind an office NAT", lines: linesN(12, func(i int) []string {
			out := login(i*300, 800+i, i, "203.0.113.50", fmt.Sprintf("user%d@example.com", i%5))
			if i%4 == 1 {
				out = append(out, clientReject(i*300+10, i, "submission/smtpd", "203.0.113.50", "554 5.7.1 <mx.sender.example[203.0.113.50]>: Client host rejected: Access denied")...)
			}
			return out
		})},
		{name: "MTA with broken TLS falls back to plain text and delivers", lines: linesN(8, func(i int) []string {
			s, pid, ip := i*7, 5000+2*(i%3), "192.0.2.70"
			return append(failedHandshake(s, pid, "smtpd", ip), received(s+1, pid+1, i, "smtpd", ip)...)
		})},
		{name: "MTA with broken TLS retrying without fallback", lines: linesN(6, func(i int) []string {
			return failedHandshake(i*50, 5100+i%3, "smtpd", "192.0.2.71")
		})},
		{name: "TLS scanner: 10 failed handshakes in a minute", lines: linesN(10, func(i int) []string {
			return failedHandshake(i*5, 5200+i%3, "smtpd", "192.0.2.72")
		}), want: []string{"36: flood 192.0.2.72/32"}},
		{name: "smtps monitor: 4 failed handshakes in a minute", lines: linesN(4, func(i int) []string {
			return smtpsProbe(i*15, 7282+i%2, "192.0.2.200")
		})},
		{name: "smtps scanner: 10 failed handshakes in a minute", lines: linesN(10, func(i int) []string {
			return smtpsProbe(i*5, 7282+i%2, "192.0.2.201")
		}), want: []string{"36: flood 192.0.2.201/32"}},
		{name: "relay meets the connection concurrency limit after our restart", lines: linesN(8, func(i int) []string {
			return concurrencyLimit(i*5, 6000+i, 51+i%2, "198.51.100.25")
		})},
		{name: "user mistyping all day, logging in a minute later", lines: linesN(8, func(i int) []string {
			return append(saslFail(i*45*60, 700+i, "192.0.2.99", "alice"), login(i*45*60+60, 800+i, i, "192.0.2.99", "alice@example.com")...)
		})},
		{name: "office NAT users mistype as bob, log in as bob@realm", lines: linesN(4, func(i int) []string {
			u := []string{"alice", "bob", "carol", "dave"}[i]
			return append(saslFail(i*600, 700+i, "192.0.2.50", u), login(i*600+30, 800+i, i, "192.0.2.50", u+"@example.com")...)
		})},
		{name: "password spray of 4 usernames", lines: linesN(4, func(i int) []string {
			return saslFail(i*600, 700+i, "192.0.2.51", []string{"admin", "info", "sales", "test"}[i])
		}), want: []string{"3: sasl_spray 192.0.2.51/32"}},
		{name: "load balancer TCP health check every 5 s", lines: linesN(24, func(i int) []string {
			return healthCheck(i*5, 900+i%5, "10.0.0.5")
		})},
		{name: "port scanner connecting and dropping 30 times a minute", lines: linesN(30, func(i int) []string {
			return healthCheck(i*2, 900+i%5, "192.0.2.210")
		}), want: []string{"88: flood 192.0.2.210/32"}},
		{name: "relay restarting its Postfix drops its open sessions", lines: append(
			linesN(20, func(i int) []string { return received(i*3, 3000+i%10, i, "smtpd", "198.51.100.25") }),
			linesN(10, func(i int) []string { return lostAfter(61, 3000+i, "EHLO", "198.51.100.25") })...)},
		{name: "bot dropping after EHLO 8 times in a minute", lines: linesN(8, func(i int) []string {
			return lostAfter(i*5, 3000+i, "EHLO", "192.0.2.220")
		}), want: []string{"7: flood 192.0.2.220/32"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			got := decideLines(t, cfg, tc.lines)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("decisions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestAcceptedMailTakesBackAHandshake: each message accepted from a client
// takes one failed TLS handshake out of its flood window; a borrowed TLS
// library problem and the lost connection fold into their handshake.
func TestAcceptedMailTakesBackAHandshake(t *testing.T) {
	e, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := logparse.NewParser(time.UTC, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	const ip = "192.0.2.70"
	lines := linesN(3, func(i int) []string { return failedHandshake(i*5, 5000+i, "smtpd", ip) })
	lines = append(lines, received(20, 5100, 1, "smtpd", ip)...)
	lines = append(lines, received(21, 5101, 2, "smtpd", ip)...)
	for _, l := range lines {
		if ev, err := p.Parse(l); err == nil {
			e.Observe(ev.Clone())
		}
	}
	s := e.clients.lookup(netip.MustParsePrefix(ip + "/32"))
	if s == nil || s.find(dFlood) == nil {
		t.Fatal("no flood window")
	}
	if n := len(s.find(dFlood).ev); n != 1 {
		t.Errorf("flood window holds %d entries, want 1 (3 handshakes, 2 taken back)", n)
	}
}
