package logparse

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/mxguard/mxguard/internal/event"
)

// TestStructureCapture reads rejects a real Postfix 3.7 logged for
// clients that put reason phrases, trailers and client specs into quoted
// local parts, HELO names and headers (testdata/structure.log, captured
// with testdata/postfix-lab plus header_checks, body_checks,
// check_client_access and reject_unknown_client_hostname).
func TestStructureCapture(t *testing.T) {
	type want struct {
		client string // "" = nobody
		reason event.Reason
		abuse  bool
	}
	f, err := os.Open("testdata/structure.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := NewParser(time.UTC, time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		ev, err := p.Parse(line)
		if err != nil {
			t.Errorf("%q: %v", line, err)
			continue
		}
		n++
		var w want
		switch {
		case strings.Contains(line, "from local;"):
			w = want{"", event.ReasonMessageRejected, false}
		case strings.Contains(line, "cleanup"):
			// the client spec Postfix appended, not the one in the Subject
			w = want{line[strings.LastIndex(line, "[")+1 : strings.LastIndex(line, "]")], event.ReasonMessageRejected, true}
		case strings.Contains(line, "User unknown"):
			w = want{"", event.ReasonUnknownRecipient, true}
		case strings.Contains(line, ": Relay access denied;"):
			w = want{"", event.ReasonRelayDenied, true}
		case strings.Contains(line, "Helo command rejected: Invalid name"):
			w = want{"", event.ReasonHeloInvalid, true}
		case strings.Contains(line, "cannot find your hostname"):
			w = want{"", event.ReasonClientNoRDNS, false}
		case strings.Contains(line, "Client host rejected: Access denied"):
			w = want{"", event.ReasonClientAccess, true}
		case strings.Contains(line, "Sender address rejected: Domain not found;"):
			w = want{"", event.ReasonSenderDomainNotFound, true}
		default:
			t.Errorf("no expectation for %q", line)
			continue
		}
		if !strings.Contains(line, "cleanup") {
			spec := line[strings.Index(line, " from ")+6:]
			w.client = spec[strings.Index(spec, "[")+1 : strings.Index(spec, "]")]
		}
		got := ""
		if ev.Client.IsValid() {
			got = ev.Client.String()
		}
		if got != w.client || ev.Reason != w.reason || ev.Abuse != w.abuse {
			t.Errorf("%q:\n got client %q %v abuse=%v\nwant client %q %v abuse=%v", line, got, ev.Reason, ev.Abuse, w.client, w.reason, w.abuse)
		}
	}
	if n < 30 {
		t.Fatalf("only %d lines read", n)
	}
}

// rejectTemplates are real reject lines (testdata/structure.log, benign
// names) with the client-controlled parts replaced: {ri}/{re} the
// recipient in internal (reply text) and external (trailer) form, {si}/{se}
// the sender, {h} the HELO name, {subj} a header. want is their class.
var rejectTemplates = []struct {
	line   string
	client string
	reason event.Reason
	abuse  bool
}{
	{"Dec 01 15:06:05 mx postfix/smtpd[19429]: NOQUEUE: reject: RCPT from unknown[127.0.0.31]: 550 5.1.1 <{ri}>: Recipient address rejected: User unknown in virtual mailbox table; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"127.0.0.31", event.ReasonUnknownRecipient, true},
	{"Dec 01 15:06:07 mx postfix/smtpd[19429]: NOQUEUE: reject: RCPT from unknown[127.0.0.31]: 554 5.7.1 <{ri}>: Relay access denied; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"127.0.0.31", event.ReasonRelayDenied, true},
	{"Dec 01 15:10:12 mx postfix/smtpd[11387]: NOQUEUE: reject: RCPT from unknown[127.0.0.13]: 450 4.1.8 <{si}>: Sender address rejected: Domain not found; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"127.0.0.13", event.ReasonSenderDomainNotFound, true},
	{"Dec 01 15:07:03 mx postfix/smtpd[19429]: NOQUEUE: reject: RCPT from unknown[127.0.0.33]: 501 5.5.2 <{h}>: Helo command rejected: Invalid name; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"127.0.0.33", event.ReasonHeloInvalid, true},
	{"Dec 01 15:09:34 mx postfix/smtpd[8787]: NOQUEUE: reject: RCPT from unknown[127.0.0.37]: 450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.37]; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"127.0.0.37", event.ReasonClientNoRDNS, false},
	{"Dec 01 15:09:34 mx postfix/smtpd[8787]: NOQUEUE: reject: RCPT from unknown[127.0.0.40]: 554 5.7.1 <unknown[127.0.0.40]>: Client host rejected: Access denied; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"127.0.0.40", event.ReasonClientAccess, true},
	// postgrey's reply (the lab runs no greylisting)
	{"Dec 01 15:06:05 mx postfix/smtpd[19429]: NOQUEUE: reject: RCPT from unknown[127.0.0.31]: 450 4.2.0 <{ri}>: Recipient address rejected: Greylisted, see http://postgrey.example/help/example.com.html; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"127.0.0.31", event.ReasonGreylisted, false},
	{"Dec 01 15:10:11 mx postfix/cleanup[11432]: 0AB25985D7E: reject: header Subject: {subj} from smtp.shop.example[127.0.0.12]; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>: 5.7.1 no thanks: go away",
		"127.0.0.12", event.ReasonMessageRejected, true},
	{"Dec 01 15:09:27 mx postfix/cleanup[8354]: 8C76C984CDA: reject: body {subj} from local; from=<{se}> to=<{re}>: 5.7.1 message content rejected",
		"", event.ReasonMessageRejected, false},
	// warn_if_reject (testdata/limits-lab): classified alike, never abuse
	{"Dec 01 17:11:48 mx postfix/smtpd[5136]: NOQUEUE: reject_warning: RCPT from unknown[203.0.113.69]: 550 5.1.1 <{ri}>: Recipient address rejected: User unknown in virtual mailbox table; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}>",
		"203.0.113.69", event.ReasonUnknownRecipient, false},
	// after AUTH, smtpd's log_whatsup appends the SASL fields
	{"Dec 01 15:06:05 mx postfix/smtpd[19429]: NOQUEUE: reject: RCPT from unknown[127.0.0.31]: 554 5.7.1 <{si}>: Sender address rejected: Access denied; from=<{se}> to=<{re}> proto=ESMTP helo=<{h}> sasl_method=PLAIN sasl_username=bob@example.com",
		"127.0.0.31", event.ReasonSenderAccess, true},
}

// fillTemplate writes local parts and a HELO name into a template the
// way Postfix would log them.
func fillTemplate(tmpl, rcptLocal, senderLocal, helo, subj string) string {
	ri, si := rcptLocal+"@example.com", senderLocal+"@bank.example"
	return strings.NewReplacer("{ri}", ri, "{re}", event.QuoteLocal(ri), "{si}", si, "{se}", event.QuoteLocal(si),
		"{h}", event.HeloAsLogged(helo), "{subj}", subj).Replace(tmpl)
}

// printable keeps what Postfix lets through into a log line: no control
// bytes, no line breaks; HELO names ASCII.
func printable(s string, ascii bool) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == unicode.ReplacementChar || ascii && r >= 0x80 {
			return -1
		}
		return r
	}, s)
}

func FuzzRejectClientText(f *testing.F) {
	for _, s := range []string{`u1>: Recipient address rejected: greylisted`, `x; from=<a> to=<b> proto=ESMTP helo=<h>`,
		`a>: Relay access denied`, `Greylisted`, `"\`, `x from victim[198.51.100.7]; from=<a> to=<b>: 5.7.1 x`, `[1.2.3.4]`, ""} {
		f.Add(s, s, s, s)
	}
	f.Add("u1@x>: Recipient address rejected: Greylisted", "u1@x", "h", "s")
	f.Add("a", "a>: Sender address rejected: Greylisted", "h", "s")
	p := NewParser(time.UTC, time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	f.Fuzz(func(t *testing.T, rcpt, sender, helo, subj string) {
		rcpt, sender, helo, subj = printable(rcpt, false), printable(sender, false), printable(helo, true), printable(subj, false)
		for _, tc := range rejectTemplates {
			line := fillTemplate(tc.line, rcpt, sender, helo, subj)
			ev, err := p.Parse(line)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			want := netip.Addr{}
			if tc.client != "" {
				want = netip.MustParseAddr(tc.client)
			}
			if ev.Reason != tc.reason || ev.Abuse != tc.abuse || ev.Client != want {
				t.Fatalf("%q:\n got %v abuse=%v client %v\nwant %v abuse=%v client %v", line, ev.Reason, ev.Abuse, ev.Client, tc.reason, tc.abuse, want)
			}
		}
	})
}

// TestRejectTemplatesBenign: the templates with benign names give their
// class (the reference the fuzz target compares with).
func TestRejectTemplatesBenign(t *testing.T) {
	p := NewParser(time.UTC, time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	for _, tc := range rejectTemplates {
		line := fillTemplate(tc.line, "u1", "s", "mail.bank.example", "hello")
		ev, err := p.Parse(line)
		if err != nil || ev.Reason != tc.reason || ev.Abuse != tc.abuse {
			t.Errorf("%q: %v %v abuse=%v, want %v abuse=%v", line, err, ev.Reason, ev.Abuse, tc.reason, tc.abuse)
		}
	}
}
