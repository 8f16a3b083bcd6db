package event_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/logparse"
)

// unquote is Postfix's internal form of an external address (the form
// reply texts quote): no double quotes, backslash escapes resolved.
func unquote(ext string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(ext); i++ {
		switch c := ext[i]; {
		case c == '"':
			in = !in
		case c == '\\' && in && i+1 < len(ext):
			i++
			b.WriteByte(ext[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// fill puts the internal forms of the names into a reply text.
func fill(text, from, to, helo string) string {
	return strings.NewReplacer("{from}", unquote(from), "{to}", unquote(to), "{helo}", helo).Replace(text)
}

// TestClassifyLogAndUpstream: every Reason, as the log parser reads it
// from a Postfix log line and as the guard reads Postfix's live reply,
// gets the same class and abuse flag.
func TestClassifyLogAndUpstream(t *testing.T) {
	const (
		benignFrom = "s@sender.example"
		benignTo   = "u1@example.com"
		benignHelo = "mail.sender.example"
		client     = "unknown[203.0.113.7]"
		smtpd      = "Dec  1 15:06:05 mx postfix/smtpd[1]: NOQUEUE: reject: "
	)
	cases := []struct {
		name           string
		stage          string
		code           int
		dsn, text      string // text with {from}, {to}, {helo} for the names Postfix quotes
		from, to, helo string // external form ("" = the benign ones)
		logLine        string // when not smtpd's form; same placeholders
		reason         event.Reason
		abuse          bool
	}{
		{name: "unknown recipient", stage: "RCPT", code: 550, dsn: "5.1.1",
			text:   "<{to}>: Recipient address rejected: User unknown in virtual mailbox table",
			reason: event.ReasonUnknownRecipient, abuse: true},
		{name: "unknown recipient, reason phrase in a quoted local part", stage: "RCPT", code: 550, dsn: "5.1.1",
			text: "<{to}>: Recipient address rejected: User unknown in virtual mailbox table",
			to:   `"u1>: Recipient address rejected: greylisted"@example.com`, reason: event.ReasonUnknownRecipient, abuse: true},
		{name: "unknown recipient, shorter name in the sender", stage: "RCPT", code: 550, dsn: "5.1.1",
			text: "<{to}>: Recipient address rejected: User unknown in virtual mailbox table",
			from: "u1@x", to: `"u1@x>: Recipient address rejected: Greylisted"@example.com`, reason: event.ReasonUnknownRecipient, abuse: true},
		{name: "relay denied", stage: "RCPT", code: 554, dsn: "5.7.1", text: "<{to}>: Relay access denied",
			reason: event.ReasonRelayDenied, abuse: true},
		{name: "relay denied, trailer in a quoted local part", stage: "RCPT", code: 554, dsn: "5.7.1", text: "<{to}>: Relay access denied",
			to: `"x; from=<a> to=<b> proto=ESMTP helo=<h>"@foreign.example`, reason: event.ReasonRelayDenied, abuse: true},
		{name: "helo non fqdn", stage: "RCPT", code: 504, dsn: "5.5.2", text: "<{helo}>: Helo command rejected: need fully-qualified hostname",
			helo: "desktop-pc", reason: event.ReasonHeloNonFQDN, abuse: true},
		{name: "helo invalid", stage: "RCPT", code: 501, dsn: "5.5.2", text: "<{helo}>: Helo command rejected: Invalid name",
			helo: "a?b?c", reason: event.ReasonHeloInvalid, abuse: true},
		{name: "helo not found, empty name", stage: "RCPT", code: 450, dsn: "4.7.1", text: "<{helo}>: Helo command rejected: Host not found",
			helo: "", reason: event.ReasonHeloNotFound, abuse: true},
		{name: "helo access map", stage: "RCPT", code: 554, dsn: "5.7.1", text: "<{helo}>: Helo command rejected: You are not my friend",
			helo: "friend", reason: event.ReasonHeloAccess, abuse: true},
		{name: "sender non fqdn", stage: "RCPT", code: 504, dsn: "5.5.2", text: "<{from}>: Sender address rejected: need fully-qualified address",
			from: "root", reason: event.ReasonSenderNonFQDN, abuse: true},
		{name: "sender domain not found", stage: "RCPT", code: 450, dsn: "4.1.8", text: "<{from}>: Sender address rejected: Domain not found",
			reason: event.ReasonSenderDomainNotFound, abuse: true},
		{name: "sender domain not found, greylisted in the sender", stage: "RCPT", code: 450, dsn: "4.1.8", text: "<{from}>: Sender address rejected: Domain not found",
			from: `"u>: Sender address rejected: Greylisted"@no-such-domain.example`, reason: event.ReasonSenderDomainNotFound, abuse: true},
		{name: "sender access map", stage: "MAIL", code: 554, dsn: "5.7.1", text: "<{from}>: Sender address rejected: Access denied",
			reason: event.ReasonSenderAccess, abuse: true},
		{name: "null sender access", stage: "RCPT", code: 554, dsn: "5.7.1", text: "<{from}>: Sender address rejected: Access denied",
			from: "", reason: event.ReasonSenderAccess, abuse: true},
		{name: "recipient non fqdn", stage: "RCPT", code: 504, dsn: "5.5.2", text: "<{to}>: Recipient address rejected: need fully-qualified address",
			to: "bob", reason: event.ReasonRecipientNonFQDN, abuse: true},
		{name: "recipient domain not found", stage: "RCPT", code: 450, dsn: "4.1.2", text: "<{to}>: Recipient address rejected: Domain not found",
			to: "u@nx.example", reason: event.ReasonRecipientDomainNotFound, abuse: true},
		{name: "recipient access map", stage: "RCPT", code: 554, dsn: "5.7.1", text: "<{to}>: Recipient address rejected: Access denied",
			reason: event.ReasonRecipientAccess, abuse: true},
		{name: "client without rdns, temporary", stage: "RCPT", code: 450, dsn: "4.7.25",
			text: "Client host rejected: cannot find your hostname, [203.0.113.7]", reason: event.ReasonClientNoRDNS, abuse: false},
		{name: "client without rdns, permanent", stage: "RCPT", code: 550, dsn: "5.7.25",
			text: "Client host rejected: cannot find your hostname, [203.0.113.7]", reason: event.ReasonClientNoRDNS, abuse: true},
		{name: "client access map", stage: "RCPT", code: 554, dsn: "5.7.1", text: "<" + client + ">: Client host rejected: Access denied",
			reason: event.ReasonClientAccess, abuse: true},
		{name: "dnsbl", stage: "RCPT", code: 554, dsn: "5.7.1",
			text: "Service unavailable; Client host [203.0.113.7] blocked using dnsbl.lab.example", reason: event.ReasonDNSBL, abuse: true},
		{name: "greylisted (postgrey)", stage: "RCPT", code: 450, dsn: "4.2.0",
			text: "<{to}>: Recipient address rejected: Greylisted, see http://postgrey.example/help/example.com.html", reason: event.ReasonGreylisted, abuse: false},
		// mxguard's policy service emits its own event: its replies, as
		// Postfix logs them, are context (the reason still reads through)
		{name: "policy service block list", stage: "RCPT", code: 554, dsn: "5.7.1",
			text: "<{to}>: Recipient address rejected: mxguard: client [203.0.113.7] is blocked", reason: event.ReasonRecipientAccess, abuse: false},
		{name: "policy service greylisting", stage: "RCPT", code: 450, dsn: "4.2.0",
			text: "<{to}>: Recipient address rejected: mxguard: Greylisted, see https://x.example (try again in 300 s)", reason: event.ReasonGreylisted, abuse: false},
		{name: "policy service HELO", stage: "RCPT", code: 554, dsn: "5.7.1",
			text: "<{to}>: Recipient address rejected: mxguard: HELO name <localhost> denied", reason: event.ReasonRecipientAccess, abuse: false},
		{name: "policy service FCrDNS in client restrictions", stage: "CONNECT", code: 450, dsn: "4.7.1",
			text: "<unknown[203.0.113.7]>: Client host rejected: mxguard: cannot find your hostname, [203.0.113.7]", reason: event.ReasonClientNoRDNS, abuse: false},
		{name: "policy mark in a client-chosen recipient is still evidence", stage: "RCPT", code: 550, dsn: "5.1.1",
			text: "<{to}>: Recipient address rejected: User unknown in virtual mailbox table",
			to:   `"u1>: Recipient address rejected: mxguard: x"@example.com`, reason: event.ReasonUnknownRecipient, abuse: true},
		{name: "multi-recipient bounce", stage: "DATA", code: 550, dsn: "5.5.3", text: "<DATA>: Data command rejected: Multi-recipient bounce",
			from: "", reason: event.ReasonMultiRecipientBounce, abuse: true},
		{name: "pipelining at RCPT", stage: "RCPT", code: 503, dsn: "5.5.0", text: "<" + client + ">: Client host rejected: Improper use of SMTP command pipelining",
			reason: event.ReasonPipelining, abuse: true},
		{name: "pipelining at DATA", stage: "DATA", code: 503, dsn: "5.5.0", text: "<DATA>: Data command rejected: Improper use of SMTP command pipelining",
			reason: event.ReasonPipelining, abuse: true},
		{name: "auth required", stage: "RCPT", code: 530, dsn: "5.7.0", text: "Authentication required",
			reason: event.ReasonAuthRequired, abuse: true},
		{name: "milter reject at end of message", stage: "END-OF-MESSAGE", code: 550, dsn: "5.7.1", text: "Spam message rejected",
			logLine: "Dec  1 15:06:05 mx postfix/cleanup[1]: 8C76C984CDA: milter-reject: END-OF-MESSAGE from " + client + ": 5.7.1 Spam message rejected; from=<{from}> to=<{to}> proto=ESMTP helo=<{helo}>",
			reason:  event.ReasonMessageRejected, abuse: true},
		{name: "milter tempfail at end of message", stage: "END-OF-MESSAGE", code: 451, dsn: "4.7.1", text: "Service unavailable",
			logLine: "Dec  1 15:06:05 mx postfix/cleanup[1]: 8C76C984CDA: milter-reject: END-OF-MESSAGE from " + client + ": 4.7.1 Service unavailable; from=<{from}> to=<{to}> proto=ESMTP helo=<{helo}>",
			reason:  event.ReasonMessageRejected, abuse: false},
		{name: "greylisting policy service in client restrictions", stage: "RCPT", code: 450, dsn: "4.7.1",
			text:   "<" + client + ">: Client host rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
			reason: event.ReasonGreylisted, abuse: false},
		{name: "postscreen service unavailable", stage: "RCPT", code: 450, dsn: "4.3.2", text: "Service currently unavailable",
			logLine: "Dec  1 15:06:05 mx postfix/postscreen[1]: NOQUEUE: reject: RCPT from [203.0.113.7]:4321: 450 4.3.2 Service currently unavailable; from=<{from}>, to=<{to}>, proto=ESMTP, helo=<{helo}>",
			reason:  event.ReasonServiceUnavailable, abuse: false},
		{name: "postscreen protocol error", stage: "RCPT", code: 550, dsn: "5.5.1", text: "Protocol error",
			logLine: "Dec  1 15:06:05 mx postfix/postscreen[1]: NOQUEUE: reject: RCPT from [203.0.113.7]:4321: 550 5.5.1 Protocol error; from=<{from}>, to=<{to}>, proto=ESMTP, helo=<{helo}>",
			reason:  event.ReasonProtocolError, abuse: true},
		{name: "temporary lookup failure", stage: "RCPT", code: 451, dsn: "4.3.0", text: "<{to}>: Temporary lookup failure",
			reason: event.ReasonOther, abuse: false},
		{name: "our configuration error", stage: "RCPT", code: 451, dsn: "4.3.5", text: "<{to}>: Recipient address rejected: Server configuration error",
			reason: event.ReasonRecipientAccess, abuse: false},
		{name: "verification not finished", stage: "RCPT", code: 450, dsn: "4.1.1", text: "<{to}>: Recipient address rejected: unverified address: Address verification in progress",
			reason: event.ReasonUnknownRecipient, abuse: false},
		{name: "verification said no", stage: "RCPT", code: 550, dsn: "5.1.1", text: "<{to}>: Recipient address rejected: undeliverable address: host mx.example[192.0.2.25] said: 550 5.1.1 User unknown",
			reason: event.ReasonUnknownRecipient, abuse: true},
		{name: "other permanent", stage: "RCPT", code: 550, dsn: "5.7.1", text: "<{to}>: Too many recipients",
			reason: event.ReasonOther, abuse: true},
	}
	seen := map[event.Reason]bool{}
	p := logparse.NewParser(time.UTC, time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from, to, helo := benignFrom, benignTo, benignHelo
			if tc.from != "" || strings.Contains(tc.name, "null sender") || strings.Contains(tc.name, "bounce") {
				from = tc.from
			}
			if tc.to != "" {
				to = tc.to
			}
			if tc.helo != "" || strings.Contains(tc.name, "empty name") {
				helo = tc.helo
			}
			text := fill(tc.text, from, to, helo)
			line := tc.logLine
			if line == "" {
				line = smtpd + tc.stage + " from " + client + ": " + strconv.Itoa(tc.code) + " " + tc.dsn + " " + tc.text +
					"; from=<{from}> to=<{to}> proto=ESMTP helo=<{helo}>"
			}
			line = strings.NewReplacer("{from}", from, "{to}", to, "{helo}", helo).Replace(fill(strings.SplitN(line, "; from=<", 2)[0], from, to, helo)) +
				strings.NewReplacer("{from}", from, "{to}", to, "{helo}", helo).Replace(trailerOf(line))
			ev, err := p.Parse(line)
			if err != nil {
				t.Fatalf("log form %q: %v", line, err)
			}
			if ev.Reason != tc.reason || ev.Abuse != tc.abuse {
				t.Errorf("log form %q: got %v abuse=%v, want %v abuse=%v", line, ev.Reason, ev.Abuse, tc.reason, tc.abuse)
			}
			c := event.Classify(event.Reply{Code: tc.code, DSN: tc.dsn, Text: text, Stage: tc.stage,
				From: from, To: to, Helo: helo, Client: client, Envelope: true})
			if c.Reason != tc.reason || c.Abuse != tc.abuse {
				t.Errorf("upstream form %q: got %v abuse=%v, want %v abuse=%v", text, c.Reason, c.Abuse, tc.reason, tc.abuse)
			}
			if c.Reason != ev.Reason || c.Detail != ev.Detail {
				t.Errorf("forms differ: upstream %v %q, log %v %q", c.Reason, c.Detail, ev.Reason, ev.Detail)
			}
		})
		seen[tc.reason] = true
	}
	for r := event.ReasonNone + 1; r.String() != "invalid"; r++ {
		if !seen[r] {
			t.Errorf("no case for reason %v", r)
		}
	}
}

// trailerOf returns the "; from=<..." part of a line template.
func trailerOf(line string) string {
	if i := strings.Index(line, "; from=<"); i >= 0 {
		return line[i:]
	}
	return ""
}

// The empty name "<>" (a null sender, a HELO name Postfix kept empty) is
// stripped when the reply's envelope has it; without an envelope it is
// not, because "<>: " may open a longer name the client chose
// (RCPT TO:<">: Relay access denied"@x>).
func TestClassifyEmptyName(t *testing.T) {
	tests := []struct {
		name  string
		reply event.Reply
		want  event.Reason
	}{
		{"null sender", event.Reply{Code: 554, DSN: "5.7.1", Stage: "RCPT", Text: "<>: Sender address rejected: Access denied",
			From: "", To: "u@example.com", Helo: "mx.example", Envelope: true}, event.ReasonSenderAccess},
		{"empty helo", event.Reply{Code: 450, DSN: "4.7.1", Stage: "RCPT", Text: "<>: Helo command rejected: Host not found",
			From: "a@b.example", To: "u@example.com", Helo: "", Envelope: true}, event.ReasonHeloNotFound},
		{"no empty name in the envelope", event.Reply{Code: 450, DSN: "4.7.1", Stage: "RCPT", Text: "<>: Helo command rejected: Host not found",
			From: "a@b.example", To: "u@example.com", Helo: "mx.example", Envelope: true}, event.ReasonOther},
		{"no envelope", event.Reply{Code: 554, DSN: "5.7.1", Stage: "RCPT", Text: "<>: Relay access denied@x>: Recipient address rejected: User unknown",
			Client: "unknown[192.0.2.1]"}, event.ReasonOther},
		{"the client's longer name wins", event.Reply{Code: 550, DSN: "5.1.1", Stage: "RCPT",
			Text: "<>: Relay access denied@x.example>: Recipient address rejected: User unknown in virtual mailbox table",
			From: "", To: `">: Relay access denied"@x.example`, Envelope: true}, event.ReasonUnknownRecipient},
	}
	for _, tc := range tests {
		if got := event.Classify(tc.reply); got.Reason != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got.Reason, tc.want)
		}
	}
}
