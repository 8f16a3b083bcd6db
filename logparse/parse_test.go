package logparse

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

var refTime = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestParse(t *testing.T) {
	const h = "Nov 25 10:49:00 mx1 postfix/smtpd[8965]: "
	const ps = "Nov 25 10:49:00 mx1 postfix/postscreen[11]: "
	tests := []struct {
		name string
		line string
		want event.Event // Raw, Time, Host, Service, PID are checked separately
		err  error
	}{
		{"connect", h + "connect from mail.example.net[198.51.100.7]",
			event.Event{Kind: event.KindConnect, Client: ip("198.51.100.7"), ClientName: "mail.example.net"}, nil},
		{"connect v6", h + "connect from unknown[2001:db8::25]",
			event.Event{Kind: event.KindConnect, Client: ip("2001:db8::25"), ClientName: "unknown"}, nil},
		{"connect mapped v4", h + "connect from unknown[::ffff:192.0.2.9]",
			event.Event{Kind: event.KindConnect, Client: ip("192.0.2.9"), ClientName: "unknown"}, nil},
		{"connect port", h + "connect from unknown[192.0.2.9]:41234",
			event.Event{Kind: event.KindConnect, Client: ip("192.0.2.9"), ClientName: "unknown", Port: 41234}, nil},
		{"disconnect clean", h + "disconnect from a.example[198.51.100.7] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
			event.Event{Kind: event.KindDisconnect, Client: ip("198.51.100.7"), ClientName: "a.example", Detail: "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"}, nil},
		{"disconnect failed rcpt is not counted again", h + "disconnect from a.example[198.51.100.7] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6",
			event.Event{Kind: event.KindDisconnect, Client: ip("198.51.100.7"), ClientName: "a.example", Detail: "ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6"}, nil},
		{"disconnect auth fail", h + "disconnect from unknown[203.0.113.4] ehlo=1 auth=0/1 quit=1 commands=2/3",
			event.Event{Kind: event.KindDisconnect, Client: ip("203.0.113.4"), ClientName: "unknown", Detail: "ehlo=1 auth=0/1 quit=1 commands=2/3", Count: 1, Abuse: true}, nil},
		{"disconnect vrfy probing", h + "disconnect from unknown[203.0.113.4] helo=1 vrfy=0/3 quit=1 commands=2/5",
			event.Event{Kind: event.KindDisconnect, Client: ip("203.0.113.4"), ClientName: "unknown", Detail: "helo=1 vrfy=0/3 quit=1 commands=2/5", Count: 3, Abuse: true}, nil},
		{"disconnect mail before helo", h + "disconnect from unknown[203.0.113.4] mail=0/1 quit=1 commands=1/2",
			event.Event{Kind: event.KindDisconnect, Client: ip("203.0.113.4"), ClientName: "unknown", Detail: "mail=0/1 quit=1 commands=1/2", Count: 1, Abuse: true}, nil},
		{"disconnect unknown command", h + "disconnect from unknown[203.0.113.4] unknown=0/2 commands=0/2",
			event.Event{Kind: event.KindDisconnect, Client: ip("203.0.113.4"), ClientName: "unknown", Detail: "unknown=0/2 commands=0/2", Count: 2, Abuse: true}, nil},
		{"reject unknown recipient",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 550 5.1.1 <nouser@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<nouser@example.com> proto=ESMTP helo=<friend>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.5"), ClientName: "unknown", Code: 550, DSN: "5.1.1",
				Reason: event.ReasonUnknownRecipient, Detail: "Recipient address rejected: User unknown in virtual mailbox table",
				From: "spam@foo.example", To: "nouser@example.com", Helo: "friend", Abuse: true}, nil},
		{"reject local table with queue id",
			h + "4F2A31C0B2: reject: RCPT from x.example[192.0.2.1]: 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in local recipient table; from=<a@x.example> to=<bob@example.com> proto=ESMTP helo=<x.example>",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindReject, Stage: "RCPT", Client: ip("192.0.2.1"), ClientName: "x.example", Code: 550, DSN: "5.1.1",
				Reason: event.ReasonUnknownRecipient, Detail: "Recipient address rejected: User unknown in local recipient table",
				From: "a@x.example", To: "bob@example.com", Helo: "x.example", Abuse: true}, nil},
		{"relay denied",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.6]: 554 5.7.1 <x@gmail.com>: Relay access denied; from=<s@foo.example> to=<x@gmail.com> proto=ESMTP helo=<foo.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.6"), ClientName: "unknown", Code: 554, DSN: "5.7.1",
				Reason: event.ReasonRelayDenied, Detail: "Relay access denied", From: "s@foo.example", To: "x@gmail.com", Helo: "foo.example", Abuse: true}, nil},
		{"helo non fqdn at EHLO stage",
			h + "NOQUEUE: reject: EHLO from unknown[203.0.113.7]: 504 5.5.2 <friend>: Helo command rejected: need fully-qualified hostname; proto=SMTP helo=<friend>",
			event.Event{Kind: event.KindReject, Stage: "EHLO", Client: ip("203.0.113.7"), ClientName: "unknown", Code: 504, DSN: "5.5.2",
				Reason: event.ReasonHeloNonFQDN, Detail: "Helo command rejected: need fully-qualified hostname", Helo: "friend", Abuse: true}, nil},
		// Postfix writes '?' for blanks and specials in a HELO name (lab: EHLO a>b<c)
		{"helo invalid with spaces",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.7]: 501 5.5.2 <a?b>: Helo command rejected: Invalid name; from=<s@x.example> to=<u@example.com> proto=SMTP helo=<a?b>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.7"), ClientName: "unknown", Code: 501, DSN: "5.5.2",
				Reason: event.ReasonHeloInvalid, Detail: "Helo command rejected: Invalid name", From: "s@x.example", To: "u@example.com", Helo: "a?b", Abuse: true}, nil},
		{"helo access map",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.7]: 554 5.7.1 <localhost>: Helo command rejected: You are not localhost; from=<s@x.example> to=<u@example.com> proto=ESMTP helo=<localhost>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.7"), ClientName: "unknown", Code: 554, DSN: "5.7.1",
				Reason: event.ReasonHeloAccess, Detail: "Helo command rejected: You are not localhost", From: "s@x.example", To: "u@example.com", Helo: "localhost", Abuse: true}, nil},
		{"helo host not found",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.7]: 450 4.7.1 <nx.example>: Helo command rejected: Host not found; from=<s@x.example> to=<u@example.com> proto=ESMTP helo=<nx.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.7"), ClientName: "unknown", Code: 450, DSN: "4.7.1",
				Reason: event.ReasonHeloNotFound, Detail: "Helo command rejected: Host not found", From: "s@x.example", To: "u@example.com", Helo: "nx.example", Abuse: true}, nil},
		{"sender non fqdn",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.8]: 504 5.5.2 <root>: Sender address rejected: need fully-qualified address; from=<root> to=<u@example.com> proto=ESMTP helo=<bot.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.8"), ClientName: "unknown", Code: 504, DSN: "5.5.2",
				Reason: event.ReasonSenderNonFQDN, Detail: "Sender address rejected: need fully-qualified address", From: "root", To: "u@example.com", Helo: "bot.example", Abuse: true}, nil},
		{"sender domain not found",
			h + "NOQUEUE: reject: MAIL from unknown[203.0.113.8]: 450 4.1.8 <a@nx.invalid>: Sender address rejected: Domain not found; from=<a@nx.invalid> proto=ESMTP helo=<bot.example>",
			event.Event{Kind: event.KindReject, Stage: "MAIL", Client: ip("203.0.113.8"), ClientName: "unknown", Code: 450, DSN: "4.1.8",
				Reason: event.ReasonSenderDomainNotFound, Detail: "Sender address rejected: Domain not found", From: "a@nx.invalid", Helo: "bot.example", Abuse: true}, nil},
		{"client no rdns",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]; from=<a@b.example> to=<u@example.com> proto=ESMTP helo=<b.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.9"), ClientName: "unknown", Code: 450, DSN: "4.7.25",
				Reason: event.ReasonClientNoRDNS, Detail: "Client host rejected: cannot find your hostname, [203.0.113.9]", From: "a@b.example", To: "u@example.com", Helo: "b.example"}, nil},
		{"client no rdns, permanent",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 550 5.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]; from=<a@b.example> to=<u@example.com> proto=ESMTP helo=<b.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.9"), ClientName: "unknown", Code: 550, DSN: "5.7.25",
				Reason: event.ReasonClientNoRDNS, Detail: "Client host rejected: cannot find your hostname, [203.0.113.9]", From: "a@b.example", To: "u@example.com", Helo: "b.example", Abuse: true}, nil},
		{"client access at CONNECT",
			h + "NOQUEUE: reject: CONNECT from unknown[203.0.113.9]: 554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied; proto=SMTP",
			event.Event{Kind: event.KindReject, Stage: "CONNECT", Client: ip("203.0.113.9"), ClientName: "unknown", Code: 554, DSN: "5.7.1",
				Reason: event.ReasonClientAccess, Detail: "Client host rejected: Access denied", Abuse: true}, nil},
		{"dnsbl smtpd",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.10]: 554 5.7.1 Service unavailable; Client host [203.0.113.10] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.10; from=<a@b.example> to=<u@example.com> proto=ESMTP helo=<b.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.10"), ClientName: "unknown", Code: 554, DSN: "5.7.1",
				Reason: event.ReasonDNSBL, Detail: "zen.spamhaus.org", From: "a@b.example", To: "u@example.com", Helo: "b.example", Abuse: true}, nil},
		{"vrfy reject has no from",
			h + "NOQUEUE: reject: VRFY from unknown[203.0.113.88]: 550 5.1.1 <root>: Recipient address rejected: User unknown in local recipient table; to=<root> proto=SMTP helo=<scanner>",
			event.Event{Kind: event.KindReject, Stage: "VRFY", Client: ip("203.0.113.88"), ClientName: "unknown", Code: 550, DSN: "5.1.1",
				Reason: event.ReasonUnknownRecipient, Detail: "Recipient address rejected: User unknown in local recipient table", To: "root", Helo: "scanner", Abuse: true}, nil},
		{"multi recipient bounce",
			h + "NOQUEUE: reject: DATA from unknown[203.0.113.11]: 550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce; from=<> proto=ESMTP helo=<b.example>",
			event.Event{Kind: event.KindReject, Stage: "DATA", Client: ip("203.0.113.11"), ClientName: "unknown", Code: 550, DSN: "5.5.3",
				Reason: event.ReasonMultiRecipientBounce, Detail: "Data command rejected: Multi-recipient bounce", Helo: "b.example", Abuse: true}, nil},
		{"unauth pipelining reject",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.12]: 554 5.5.0 <u@example.com>: Recipient address rejected: Improper use of SMTP command pipelining; from=<a@b.example> to=<u@example.com> proto=SMTP helo=<b.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.12"), ClientName: "unknown", Code: 554, DSN: "5.5.0",
				Reason: event.ReasonPipelining, Detail: "Recipient address rejected: Improper use of SMTP command pipelining", From: "a@b.example", To: "u@example.com", Helo: "b.example", Abuse: true}, nil},
		{"greylisted is not abuse",
			h + "NOQUEUE: reject: RCPT from a.example[198.51.100.2]: 450 4.2.0 <u@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html; from=<a@a.example> to=<u@example.com> proto=ESMTP helo=<a.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("198.51.100.2"), ClientName: "a.example", Code: 450, DSN: "4.2.0",
				Reason: event.ReasonGreylisted, Detail: "Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", From: "a@a.example", To: "u@example.com", Helo: "a.example"}, nil},
		{"temporary lookup failure is not abuse",
			h + "NOQUEUE: reject: RCPT from a.example[198.51.100.2]: 451 4.3.0 <u@example.com>: Temporary lookup failure; from=<a@a.example> to=<u@example.com> proto=ESMTP helo=<a.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("198.51.100.2"), ClientName: "a.example", Code: 451, DSN: "4.3.0",
				Reason: event.ReasonOther, Detail: "Temporary lookup failure", From: "a@a.example", To: "u@example.com", Helo: "a.example"}, nil},
		{"milter reject without code",
			h + "4F2A31C0B2: milter-reject: END-OF-MESSAGE from a.example[198.51.100.2]: 5.7.1 Spam message rejected; from=<a@a.example> to=<u@example.com> proto=ESMTP helo=<a.example>",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindReject, Stage: "END-OF-MESSAGE", Client: ip("198.51.100.2"), ClientName: "a.example", DSN: "5.7.1",
				Reason: event.ReasonMessageRejected, Detail: "Spam message rejected", From: "a@a.example", To: "u@example.com", Helo: "a.example", Abuse: true}, nil},
		{"pipelining", h + "improper command pipelining after HELO from unknown[203.0.113.13]: MAIL FROM:<a@b.example>\\r\\nRCPT TO:<u@example.com>\\r\\n",
			event.Event{Kind: event.KindPipelining, Stage: "HELO", Client: ip("203.0.113.13"), ClientName: "unknown", Detail: `MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n`, Abuse: true}, nil},
		{"too many errors", h + "too many errors after RCPT from unknown[203.0.113.14]",
			event.Event{Kind: event.KindTooManyErrors, Stage: "RCPT", Client: ip("203.0.113.14"), ClientName: "unknown", Abuse: true}, nil},
		{"lost connection after AUTH", h + "lost connection after AUTH from unknown[203.0.113.15]",
			event.Event{Kind: event.KindLostConnection, Stage: "AUTH", Client: ip("203.0.113.15"), ClientName: "unknown", Abuse: true}, nil},
		{"lost connection after DATA is not abuse", h + "lost connection after DATA (0 bytes) from a.example[198.51.100.2]",
			event.Event{Kind: event.KindLostConnection, Stage: "DATA", Client: ip("198.51.100.2"), ClientName: "a.example"}, nil},
		{"lost connection after CONNECT is not abuse", h + "lost connection after CONNECT from monitor.example[198.51.100.3]",
			event.Event{Kind: event.KindLostConnection, Stage: "CONNECT", Client: ip("198.51.100.3"), ClientName: "monitor.example"}, nil},
		{"timeout after END-OF-MESSAGE", h + "timeout after END-OF-MESSAGE from a.example[198.51.100.2]",
			event.Event{Kind: event.KindTimeout, Stage: "END-OF-MESSAGE", Client: ip("198.51.100.2"), ClientName: "a.example"}, nil},
		{"timeout after RCPT", h + "timeout after RCPT from unknown[203.0.113.16]",
			event.Event{Kind: event.KindTimeout, Stage: "RCPT", Client: ip("203.0.113.16"), ClientName: "unknown", Abuse: true}, nil},
		{"sasl fail", h + "warning: unknown[203.0.113.17]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
			event.Event{Kind: event.KindSASLFail, Stage: "AUTH", Client: ip("203.0.113.17"), ClientName: "unknown", Abuse: true}, nil},
		{"sasl fail with user", h + "warning: unknown[203.0.113.17]: SASL PLAIN authentication failed: authentication failure, sasl_username=admin@example.com",
			event.Event{Kind: event.KindSASLFail, Stage: "AUTH", Client: ip("203.0.113.17"), ClientName: "unknown", Detail: "admin@example.com", Abuse: true}, nil},
		{"sasl server lost", h + "warning: a.example[198.51.100.2]: SASL LOGIN authentication failed: Connection lost to authentication server",
			event.Event{Kind: event.KindSASLFail, Stage: "AUTH", Client: ip("198.51.100.2"), ClientName: "a.example"}, nil},
		{"non smtp", h + "warning: non-SMTP command from unknown[203.0.113.18]: GET / HTTP/1.1",
			event.Event{Kind: event.KindNonSMTP, Client: ip("203.0.113.18"), ClientName: "unknown", Detail: "GET / HTTP/1.1", Abuse: true}, nil},
		{"hostname mismatch", h + "warning: hostname mail.bad.example does not resolve to address 203.0.113.19: Name or service not known",
			event.Event{Kind: event.KindHostnameMismatch, Client: ip("203.0.113.19"), ClientName: "mail.bad.example"}, nil},
		{"hostname mismatch v6", h + "warning: hostname mail.bad.example does not resolve to address 2001:db8::19",
			event.Event{Kind: event.KindHostnameMismatch, Client: ip("2001:db8::19"), ClientName: "mail.bad.example"}, nil},
		{"received", h + "4F2A31C0B2: client=a.example[198.51.100.2]",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindReceived, Client: ip("198.51.100.2"), ClientName: "a.example"}, nil},
		{"sasl login", h + "4bGhL23xYzz1Rt: client=unknown[198.51.100.4], sasl_method=PLAIN, sasl_username=alice@example.com",
			event.Event{QueueID: "4bGhL23xYzz1Rt", Kind: event.KindSASLLogin, Stage: "AUTH", Client: ip("198.51.100.4"), ClientName: "unknown", Detail: "alice@example.com"}, nil},
		{"cleanup milter reject", "Nov 25 10:49:00 mx1 postfix/cleanup[4]: BB67338CCA8B: milter-reject: END-OF-MESSAGE from unknown[203.0.113.30]: 5.7.1 Spam message rejected; from=<a@b.example> to=<u@example.com> proto=ESMTP helo=<b.example>",
			event.Event{QueueID: "BB67338CCA8B", Kind: event.KindReject, Stage: "END-OF-MESSAGE", Client: ip("203.0.113.30"), ClientName: "unknown", DSN: "5.7.1",
				Reason: event.ReasonMessageRejected, Detail: "Spam message rejected", From: "a@b.example", To: "u@example.com", Helo: "b.example", Abuse: true}, nil},
		{"cleanup header check", "Nov 25 10:49:00 mx1 postfix/cleanup[4]: BB67338CCA8B: reject: header Subject: cheap pills from here from unknown[203.0.113.31]; from=<a@b.example> to=<u@example.com> proto=ESMTP helo=<b.example>: 5.7.1 No pills please",
			event.Event{QueueID: "BB67338CCA8B", Kind: event.KindReject, Stage: "END-OF-MESSAGE", Client: ip("203.0.113.31"), ClientName: "unknown", DSN: "5.7.1",
				Reason: event.ReasonMessageRejected, Detail: "No pills please", From: "a@b.example", To: "u@example.com", Helo: "b.example", Abuse: true}, nil},
		// The client spec is the one Postfix appends: read from the end,
		// a forged one in the envelope or the header is never it.
		{"cleanup header check with a forged client in the envelope",
			"Nov 25 10:49:00 mx1 postfix/cleanup[4]: BB67338CCA8B: reject: header Subject: hi from mail.attacker.example[203.0.113.9]; from=<\"x from victim[198.51.100.7]; from=<y\"@attacker.example> to=<u@example.com> proto=ESMTP helo=<a.example>: 5.7.1 No",
			event.Event{QueueID: "BB67338CCA8B", Kind: event.KindReject, Stage: "END-OF-MESSAGE", DSN: "5.7.1",
				Client: ip("203.0.113.9"), ClientName: "mail.attacker.example", Helo: "a.example", To: "u@example.com",
				From: `"x from victim[198.51.100.7]; from=<y"@attacker.example`, Reason: event.ReasonMessageRejected, Detail: "No", Abuse: true}, nil},
		{"cleanup header check with a forged client in the header",
			"Nov 25 10:49:00 mx1 postfix/cleanup[4]: BB67338CCA8B: reject: header Subject: x from victim[198.51.100.7]; from=<a> from mail.attacker.example[203.0.113.9]; from=<s@attacker.example> to=<u@example.com> proto=ESMTP helo=<a.example>: 5.7.1 No",
			event.Event{QueueID: "BB67338CCA8B", Kind: event.KindReject, Stage: "END-OF-MESSAGE", DSN: "5.7.1",
				Client: ip("203.0.113.9"), ClientName: "mail.attacker.example", Helo: "a.example", To: "u@example.com",
				From: "s@attacker.example", Reason: event.ReasonMessageRejected, Detail: "No", Abuse: true}, nil},
		{"sasl username imitating a server failure is still abuse", h + "warning: unknown[203.0.113.17]: SASL LOGIN authentication failed: authentication failure, sasl_username=Connection lost to authentication server",
			event.Event{Kind: event.KindSASLFail, Stage: "AUTH", Client: ip("203.0.113.17"), ClientName: "unknown", Detail: "Connection lost to authentication server", Abuse: true}, nil},
		// postscreen
		{"ps connect", ps + "CONNECT from [203.0.113.20]:4321 to [192.0.2.1]:25",
			event.Event{Kind: event.KindPSConnect, Client: ip("203.0.113.20"), Port: 4321}, nil},
		{"ps pass new", ps + "PASS NEW [198.51.100.5]:4321",
			event.Event{Kind: event.KindPSPass, Client: ip("198.51.100.5"), Port: 4321, Detail: "NEW"}, nil},
		{"ps pregreet", ps + `PREGREET 11 after 0.13 from [203.0.113.21]:4321: EHLO ylmf-pc\r\n`,
			event.Event{Kind: event.KindPregreet, Client: ip("203.0.113.21"), Port: 4321, Count: 11, Detail: `EHLO ylmf-pc\r\n`, Abuse: true}, nil},
		{"ps hangup", ps + "HANGUP after 0.7 from [203.0.113.22]:4321 in tests before SMTP handshake",
			event.Event{Kind: event.KindHangup, Client: ip("203.0.113.22"), Port: 4321, Abuse: true}, nil},
		{"ps command pipelining", ps + "COMMAND PIPELINING from [203.0.113.23]:4321 after RCPT: DATA\\r\\n",
			event.Event{Kind: event.KindPipelining, Stage: "RCPT", Client: ip("203.0.113.23"), Port: 4321, Detail: `DATA\r\n`, Abuse: true}, nil},
		{"ps non smtp", ps + "NON-SMTP COMMAND from [203.0.113.24]:4321 after CONNECT: GET / HTTP/1.1",
			event.Event{Kind: event.KindNonSMTP, Stage: "CONNECT", Client: ip("203.0.113.24"), Port: 4321, Detail: "GET / HTTP/1.1", Abuse: true}, nil},
		{"ps bare newline", ps + "BARE NEWLINE from [203.0.113.25]:4321 after DATA",
			event.Event{Kind: event.KindBareNewline, Stage: "DATA", Client: ip("203.0.113.25"), Port: 4321, Abuse: true}, nil},
		{"ps command time limit", ps + "COMMAND TIME LIMIT from [203.0.113.26]:4321 after RCPT",
			event.Event{Kind: event.KindCommandLimit, Stage: "RCPT", Client: ip("203.0.113.26"), Port: 4321, Detail: "TIME", Abuse: true}, nil},
		{"ps dnsbl rank", ps + "DNSBL rank 3 for [203.0.113.27]:4321",
			event.Event{Kind: event.KindDNSBL, Client: ip("203.0.113.27"), Port: 4321, Count: 3, Abuse: true}, nil},
		{"ps whitelisted (old word)", ps + "WHITELISTED [198.51.100.6]:4321",
			event.Event{Kind: event.KindPSAllowlisted, Client: ip("198.51.100.6"), Port: 4321}, nil},
		{"ps denylisted", ps + "DENYLISTED [203.0.113.28]:4321",
			event.Event{Kind: event.KindPSDenylisted, Client: ip("203.0.113.28"), Port: 4321, Abuse: true}, nil},
		{"ps disconnect", ps + "DISCONNECT [198.51.100.6]:4321",
			event.Event{Kind: event.KindPSDisconnect, Client: ip("198.51.100.6"), Port: 4321}, nil},
		{"ps 450 after deep tests is benign",
			ps + "NOQUEUE: reject: RCPT from [198.51.100.5]:4321: 450 4.3.2 Service currently unavailable; from=<a@a.example>, to=<u@example.com>, proto=ESMTP, helo=<a.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("198.51.100.5"), Port: 4321, Code: 450, DSN: "4.3.2",
				Reason: event.ReasonServiceUnavailable, Detail: "Service currently unavailable", From: "a@a.example", To: "u@example.com", Helo: "a.example"}, nil},
		{"ps protocol error after pregreet",
			ps + "NOQUEUE: reject: RCPT from [203.0.113.41]:59637: 550 5.5.1 Protocol error; from=<win@bank.example>, to=<alice@example.com>, proto=ESMTP, helo=<pregreet.spam.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.41"), Port: 59637, Code: 550, DSN: "5.5.1",
				Reason: event.ReasonProtocolError, Detail: "Protocol error", From: "win@bank.example", To: "alice@example.com", Helo: "pregreet.spam.example", Abuse: true}, nil},
		{"helo invalid ip address",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.36]: 501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address; from=<o@bank.example> to=<alice@example.com> proto=ESMTP helo=<[300.1.1.1]>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.36"), ClientName: "unknown", Code: 501, DSN: "5.5.2",
				Reason: event.ReasonHeloInvalid, Detail: "Helo command rejected: invalid ip address", From: "o@bank.example", To: "alice@example.com", Helo: "[300.1.1.1]", Abuse: true}, nil},
		{"ps dnsbl reject",
			ps + "NOQUEUE: reject: RCPT from [203.0.113.27]:4321: 550 5.7.1 Service unavailable; client [203.0.113.27] blocked using zen.spamhaus.org; from=<a@b.example>, to=<u@example.com>, proto=ESMTP, helo=<b.example>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.27"), Port: 4321, Code: 550, DSN: "5.7.1",
				Reason: event.ReasonDNSBL, Detail: "zen.spamhaus.org", From: "a@b.example", To: "u@example.com", Helo: "b.example", Abuse: true}, nil},
		// delivery
		{"qmgr", "Nov 25 10:49:00 mx1 postfix/qmgr[2]: 4F2A31C0B2: from=<a@a.example>, size=1234, nrcpt=2 (queue active)",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindQueued, From: "a@a.example", Count: 2}, nil},
		{"delivered", "Nov 25 10:49:00 mx1 postfix/local[3]: 4F2A31C0B2: to=<u@example.com>, relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindDelivered, To: "u@example.com", DSN: "2.0.0", Detail: "delivered to mailbox"}, nil},
		{"deferred", "Nov 25 10:49:00 mx1 postfix/smtp[3]: 4F2A31C0B2: to=<u@far.example>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to far.example[192.0.2.99]:25: Connection timed out)",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindDeferred, To: "u@far.example", DSN: "4.4.1", Detail: "connect to far.example[192.0.2.99]:25: Connection timed out"}, nil},
		{"bounced", "Nov 25 10:49:00 mx1 postfix/virtual[3]: 4F2A31C0B2: to=<x@example.com>, relay=virtual, delay=0.1, delays=0/0/0/0.1, dsn=5.2.2, status=bounced (mailbox full)",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindBounced, To: "x@example.com", DSN: "5.2.2", Detail: "mailbox full"}, nil},
		// skipped
		{"other program", "Nov 25 10:49:00 mx1 sshd[1]: Accepted publickey for root", event.Event{}, ErrNotPostfix},
		{"no header", "hello world", event.Event{}, ErrNotPostfix},
		{"empty", "", event.Event{}, ErrNotPostfix},
		{"postfix line of no interest", h + "warning: dict_nis_init: NIS domain name not set - NIS lookups disabled", event.Event{}, ErrUnrecognized},
		// anvil limits (the forms captured in testdata/limits-lab)
		{"connection rate limit", h + "warning: Connection rate limit exceeded: 5 from unknown[203.0.113.62] for service 127.0.0.1:2625",
			event.Event{Kind: event.KindRateLimit, Stage: "CONNECT", Client: ip("203.0.113.62"), ClientName: "unknown", Detail: event.LimitConnectionRate, Count: 5, Abuse: true}, nil},
		{"connection count limit", h + "warning: Connection concurrency limit exceeded: 3 from mail.example.net[2001:db8::63] for service smtp",
			event.Event{Kind: event.KindRateLimit, Stage: "CONNECT", Client: ip("2001:db8::63"), ClientName: "mail.example.net", Detail: event.LimitConnectionCount, Count: 3, Abuse: true}, nil},
		{"message rate limit", h + "warning: Message delivery request rate limit exceeded: 3 from unknown[203.0.113.64] for service smtp",
			event.Event{Kind: event.KindRateLimit, Stage: "MAIL", Client: ip("203.0.113.64"), ClientName: "unknown", Detail: event.LimitMessageRate, Count: 3, Abuse: true}, nil},
		{"recipient rate limit", h + "warning: Recipient address rate limit exceeded: 4 from unknown[203.0.113.65] for service submission",
			event.Event{Kind: event.KindRateLimit, Stage: "RCPT", Client: ip("203.0.113.65"), ClientName: "unknown", Detail: event.LimitRecipientRate, Count: 4, Abuse: true}, nil},
		{"new tls session rate limit", h + "warning: New TLS session rate limit exceeded: 3 from unknown[203.0.113.66] for service smtp",
			event.Event{Kind: event.KindRateLimit, Stage: "STARTTLS", Client: ip("203.0.113.66"), ClientName: "unknown", Detail: event.LimitNewTLSRate, Count: 3, Abuse: true}, nil},
		{"rate limit without count", h + "warning: Connection rate limit exceeded: many from unknown[203.0.113.62] for service smtp", event.Event{}, ErrUnrecognized},
		{"rate limit without service", h + "warning: Connection rate limit exceeded: 5 from unknown[203.0.113.62]", event.Event{}, ErrUnrecognized},
		// TLS
		{"ssl_accept error code", h + "SSL_accept error from unknown[203.0.113.67]: -1",
			event.Event{Kind: event.KindTLSError, Stage: "STARTTLS", Client: ip("203.0.113.67"), ClientName: "unknown", Detail: "-1", Abuse: true}, nil},
		{"ssl_accept error lost connection", h + "SSL_accept error from unknown[203.0.113.68]: lost connection",
			event.Event{Kind: event.KindTLSError, Stage: "STARTTLS", Client: ip("203.0.113.68"), ClientName: "unknown", Detail: "lost connection", Abuse: true}, nil},
		{"ssl_accept error tlsproxy", "Nov 25 10:49:00 mx1 postfix/tlsproxy[7]: SSL_accept error from [203.0.113.71]:58747: Connection reset by peer",
			event.Event{Kind: event.KindTLSError, Stage: "STARTTLS", Client: ip("203.0.113.71"), Port: 58747, Detail: "Connection reset by peer", Abuse: true}, nil},
		{"tls library problem without session", h + "warning: TLS library problem: error:0A00009C:SSL routines::http request:../ssl/record/ssl3_record.c:341:",
			event.Event{Kind: event.KindTLSError, Stage: "STARTTLS", Detail: "error:0A00009C:SSL routines::http request:../ssl/record/ssl3_record.c:341:"}, nil},
		{"lost connection after starttls", h + "lost connection after STARTTLS from unknown[203.0.113.67]",
			event.Event{Kind: event.KindLostConnection, Stage: "STARTTLS", Client: ip("203.0.113.67"), ClientName: "unknown", Abuse: true}, nil},
		{"ssl_accept error without client", h + "SSL_accept error from somewhere: -1", event.Event{}, ErrUnrecognized},
		// warn_if_reject
		{"reject_warning helo access",
			h + "NOQUEUE: reject_warning: RCPT from unknown[203.0.113.69]: 554 5.7.1 <friend>: Helo command rejected: You are not my friend; from=<> to=<nobody@example.com> proto=ESMTP helo=<friend>",
			event.Event{Kind: event.KindRejectWarning, Stage: "RCPT", Client: ip("203.0.113.69"), ClientName: "unknown", Code: 554, DSN: "5.7.1",
				Reason: event.ReasonHeloAccess, Detail: "Helo command rejected: You are not my friend", To: "nobody@example.com", Helo: "friend"}, nil},
		{"reject_warning unknown user with queue id",
			h + "4F2A31C0B2: reject_warning: RCPT from unknown[203.0.113.69]: 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<a@b.example> to=<nobody@example.com> proto=ESMTP helo=<mx.b.example>",
			event.Event{QueueID: "4F2A31C0B2", Kind: event.KindRejectWarning, Stage: "RCPT", Client: ip("203.0.113.69"), ClientName: "unknown", Code: 550, DSN: "5.1.1",
				Reason: event.ReasonUnknownRecipient, Detail: "Recipient address rejected: User unknown in virtual mailbox table", From: "a@b.example", To: "nobody@example.com", Helo: "mx.b.example"}, nil},
		{"reject_warning dnsbl",
			h + "NOQUEUE: reject_warning: RCPT from unknown[203.0.113.52]: 554 5.7.1 Service unavailable; Client host [203.0.113.52] blocked using dnsbl.example; from=<a@b.example> to=<u@example.com> proto=ESMTP helo=<b.example>",
			event.Event{Kind: event.KindRejectWarning, Stage: "RCPT", Client: ip("203.0.113.52"), ClientName: "unknown", Code: 554, DSN: "5.7.1",
				Reason: event.ReasonDNSBL, Detail: "dnsbl.example", From: "a@b.example", To: "u@example.com", Helo: "b.example"}, nil},
		{"reject_warning truncated", h + "NOQUEUE: reject_warning: RCPT from unknown[203.0.113.5]", event.Event{}, ErrUnrecognized},
		// the empty name "<>" and the SASL fields after the trailer
		{"helo host not found quoting the empty name",
			h + "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 450 4.7.1 <>: Helo command rejected: Host not found; from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("192.0.2.1"), ClientName: "unknown", Code: 450, DSN: "4.7.1",
				Reason: event.ReasonHeloNotFound, Detail: "Helo command rejected: Host not found", From: "a@b.example", To: "c@d.example", Abuse: true}, nil},
		{"helo sanitised by postfix (HELO <>)",
			h + "NOQUEUE: reject: RCPT from unknown[203.0.113.70]: 450 4.7.1 <??>: Helo command rejected: Host not found; from=<a@sender.example> to=<alice@example.com> proto=SMTP helo=<??>",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("203.0.113.70"), ClientName: "unknown", Code: 450, DSN: "4.7.1",
				Reason: event.ReasonHeloNotFound, Detail: "Helo command rejected: Host not found", From: "a@sender.example", To: "alice@example.com", Helo: "??", Abuse: true}, nil},
		{"null sender access after AUTH (sasl fields follow helo)",
			h + "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <>: Sender address rejected: Access denied; from=<> to=<c@d.example> proto=ESMTP helo=<x.example> sasl_method=PLAIN sasl_username=bob@example.com",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("192.0.2.1"), ClientName: "unknown", Code: 554, DSN: "5.7.1",
				Reason: event.ReasonSenderAccess, Detail: "Sender address rejected: Access denied", To: "c@d.example", Helo: "x.example", Abuse: true}, nil},
		{"sasl user name that imitates the fields",
			h + "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <u@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<a@b.example> to=<u@example.com> proto=ESMTP helo=<x.example> sasl_method=LOGIN sasl_username=eve sasl_method=X sasl_sender=y",
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("192.0.2.1"), ClientName: "unknown", Code: 550, DSN: "5.1.1",
				Reason: event.ReasonUnknownRecipient, Detail: "Recipient address rejected: User unknown in virtual mailbox table", From: "a@b.example", To: "u@example.com", Helo: "x.example", Abuse: true}, nil},
		{"recipient that imitates the sasl fields",
			h + `NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <x sasl_method=PLAIN@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<a@b.example> to=<"x sasl_method=PLAIN"@example.com> proto=ESMTP helo=<x.example>`,
			event.Event{Kind: event.KindReject, Stage: "RCPT", Client: ip("192.0.2.1"), ClientName: "unknown", Code: 550, DSN: "5.1.1",
				Reason: event.ReasonUnknownRecipient, Detail: "Recipient address rejected: User unknown in virtual mailbox table", From: "a@b.example", To: `"x sasl_method=PLAIN"@example.com`, Helo: "x.example", Abuse: true}, nil},
		{"cleanup message-id", "Nov 25 10:49:00 mx1 postfix/cleanup[3]: 4F2A31C0B2: message-id=<x@y>", event.Event{}, ErrUnrecognized},
		{"truncated reject", h + "NOQUEUE: reject: RCPT from unknown[203.0.113.5]", event.Event{}, ErrUnrecognized},
		{"bad address", h + "connect from unknown[999.1.1.1]", event.Event{}, ErrUnrecognized},
		{"bad month", "Foo 25 10:49:00 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]", event.Event{}, ErrNotPostfix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(time.UTC, refTime)
			got, err := p.Parse(tc.line)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if got.Raw != tc.line {
				t.Errorf("Raw not the line")
			}
			if got.Host != "mx1" || got.PID == 0 || !strings.HasPrefix(got.Service, "postfix/") {
				t.Errorf("header: host %q pid %d service %q", got.Host, got.PID, got.Service)
			}
			want := tc.want
			want.Raw, want.Time, want.Host, want.Service, want.PID = got.Raw, got.Time, got.Host, got.Service, got.PID
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestHeaders(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	const msg = "connect from a[192.0.2.1]"
	tests := []struct {
		name     string
		line     string
		loc      *time.Location
		ref      time.Time
		want     time.Time
		host     string
		service  string
		wantFail bool
	}{
		{"bsd padded day", "Nov  5 10:49:00 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 5, 10, 49, 0, 0, time.UTC), "mx1", "postfix/smtpd", false},
		{"bsd one-digit day without padding", "Mar 7 02:09:33 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 3, 7, 2, 9, 33, 0, time.UTC), "mx1", "postfix/smtpd", false},
		{"bsd one-digit day without padding, no host", "Mar 7 02:09:33 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 3, 7, 2, 9, 33, 0, time.UTC), "", "postfix/smtpd", false},
		{"bsd day zero without padding", "Mar 0 02:09:33 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime, time.Time{}, "", "", true},
		{"bsd local zone", "Nov 25 10:49:00 mx1 postfix/smtpd[1]: " + msg, berlin, refTime,
			time.Date(2026, 11, 25, 10, 49, 0, 0, berlin), "mx1", "postfix/smtpd", false},
		{"maillog_file with microseconds", "Nov 25 10:49:00.250000 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 10, 49, 0, 250000000, time.UTC), "mx1", "postfix/smtpd", false},
		{"maillog_file without host", "Nov 25 10:49:00.250000 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 10, 49, 0, 250000000, time.UTC), "", "postfix/smtpd", false},
		{"rfc3339 fraction zone", "2026-11-25T10:49:00.123456+01:00 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 9, 49, 0, 123456000, time.UTC), "mx1", "postfix/smtpd", false},
		{"rfc3339 Z", "2026-11-25T10:49:00Z mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 10, 49, 0, 0, time.UTC), "mx1", "postfix/smtpd", false},
		{"journal short-iso", "2026-11-25T10:49:00+0100 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 9, 49, 0, 0, time.UTC), "mx1", "postfix/smtpd", false},
		{"journal short-iso-precise", "2026-11-25T10:49:00.5-0130 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 12, 19, 0, 500000000, time.UTC), "mx1", "postfix/smtpd", false},
		{"multi-instance", "Nov 25 10:49:00 mx1 postfix-in/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 10, 49, 0, 0, time.UTC), "mx1", "postfix-in/smtpd", false},
		{"master.cf service", "Nov 25 10:49:00 mx1 postfix/submission/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 10, 49, 0, 0, time.UTC), "mx1", "postfix/submission/smtpd", false},
		{"smtps and instance", "Nov 25 10:49:00 mx1 postfix-out/smtps/smtpd[1]: " + msg, time.UTC, refTime,
			time.Date(2026, 11, 25, 10, 49, 0, 0, time.UTC), "mx1", "postfix-out/smtps/smtpd", false},
		// New Year: a December line read with a January reference is last year's.
		{"year rollover back", "Dec 31 23:59:59 mx1 postfix/smtpd[1]: " + msg, time.UTC, time.Date(2027, 1, 1, 0, 5, 0, 0, time.UTC),
			time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), "mx1", "postfix/smtpd", false},
		{"year rollover same", "Jan  1 00:00:01 mx1 postfix/smtpd[1]: " + msg, time.UTC, time.Date(2027, 1, 1, 0, 5, 0, 0, time.UTC),
			time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC), "mx1", "postfix/smtpd", false},
		{"bad zone", "2026-11-25T10:49:00+1 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime, time.Time{}, "", "", true},
		{"bad pid", "Nov 25 10:49:00 mx1 postfix/smtpd[x]: " + msg, time.UTC, refTime, time.Time{}, "", "", true},
		{"bad hour", "Nov 25 25:49:00 mx1 postfix/smtpd[1]: " + msg, time.UTC, refTime, time.Time{}, "", "", true},
		{"not a daemon", "Nov 25 10:49:00 mx1 postfix/frobnicate[1]: " + msg, time.UTC, refTime, time.Time{}, "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(tc.loc, tc.ref)
			ev, err := p.Parse(tc.line)
			if tc.wantFail {
				if err == nil {
					t.Fatalf("want error, got %+v", ev)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ev.Time.Equal(tc.want) || ev.Host != tc.host || ev.Service != tc.service || ev.Kind != event.KindConnect {
				t.Errorf("got time %v host %q service %q kind %v; want %v %q %q", ev.Time, ev.Host, ev.Service, ev.Kind, tc.want, tc.host, tc.service)
			}
			// the cached path must agree with the first parse
			ev2, _ := p.Parse(tc.line)
			if !ev2.Time.Equal(ev.Time) {
				t.Errorf("cached time %v != %v", ev2.Time, ev.Time)
			}
		})
	}
}

func TestParseClient(t *testing.T) {
	tests := []struct {
		in   string
		name string
		addr string
		port int
		ok   bool
	}{
		{"mail.example.com[192.0.2.1]", "mail.example.com", "192.0.2.1", 0, true},
		{"unknown[2001:db8::1]", "unknown", "2001:db8::1", 0, true},
		{"[192.0.2.1]:25", "", "192.0.2.1", 25, true},
		{"[IPv6:2001:db8::1]", "", "2001:db8::1", 0, true},
		{"[2001:db8::1]:2525", "", "2001:db8::1", 2525, true},
		{"unknown[::ffff:192.0.2.1]", "unknown", "192.0.2.1", 0, true},
		{"x[192.0.2.1]:99999", "", "", 0, false}, // port out of range is left as trailing text
		{"x[fe80::1%eth0]", "", "", 0, false},
		{"x[192.0.2]", "", "", 0, false},
		{"x 192.0.2.1", "", "", 0, false},
		{"a b[192.0.2.1]", "", "", 0, false},
		{"", "", "", 0, false},
	}
	for _, tc := range tests {
		name, addr, port, ok := ParseClient(tc.in)
		if ok != tc.ok {
			t.Errorf("ParseClient(%q) ok = %v", tc.in, ok)
			continue
		}
		if ok && (name != tc.name || addr != netip.MustParseAddr(tc.addr) || port != tc.port) {
			t.Errorf("ParseClient(%q) = %q %v %d", tc.in, name, addr, port)
		}
	}
}

// The classifier must not allocate: not for skipped lines, not for the
// lines it recognises (their strings alias the input).
func TestParseAllocs(t *testing.T) {
	lines := []string{
		"Nov 25 10:49:00 mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 550 5.1.1 <nouser@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<nouser@example.com> proto=ESMTP helo=<friend>",
		"Nov 25 10:49:00 mx1 postfix/cleanup[3]: 4F2A31C0B2: message-id=<x@y>",
		"Nov 25 10:49:00 mx1 sshd[1]: Accepted publickey for root",
		"2026-11-25T10:49:00.123456+01:00 mx1 postfix/postscreen[11]: PREGREET 11 after 0.13 from [2001:db8::5]:4321: EHLO x",
		// the forms added with the limits lab; the session table is set
		// by the connect line and read by the TLS problem
		"Dec 01 17:11:47 mx postfix/smtpd[5136]: connect from unknown[203.0.113.67]",
		"Dec 01 17:11:47 mx postfix/smtpd[5136]: warning: TLS library problem: error:0A00009C:SSL routines::http request:../ssl/record/ssl3_record.c:341:",
		"Dec 01 17:11:47 mx postfix/smtpd[5136]: SSL_accept error from unknown[203.0.113.67]: -1",
		"Dec 01 17:11:47 mx postfix/smtpd[5136]: disconnect from unknown[203.0.113.67] ehlo=1 starttls=0/1 commands=1/2",
		"Dec 01 17:11:47 mx postfix/smtpd[5122]: warning: Connection rate limit exceeded: 5 from unknown[203.0.113.62] for service 127.0.0.1:2625",
		"Dec 01 17:11:48 mx postfix/smtpd[5136]: NOQUEUE: reject_warning: RCPT from unknown[203.0.113.69]: 554 5.7.1 <friend>: Helo command rejected: You are not my friend; from=<> to=<nobody@example.com> proto=ESMTP helo=<friend>",
		"Dec 01 17:11:48 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <>: Sender address rejected: Access denied; from=<> to=<c@d.example> proto=ESMTP helo=<x.example> sasl_method=PLAIN sasl_username=bob",
		"Dec 01 17:11:47 mx postfix/smtpd[5136]: Anonymous TLS connection established from unknown[203.0.113.66]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
		"Dec 01 17:11:51 mx postfix/cleanup[5134]: table hash:/etc/postfix/canonical(0,lock|fold_fix|utf8_request) has changed -- restarting",
		"Dec 01 17:11:47 mx postfix/master[5067]: daemon started -- version 3.7.11, configuration /etc/postfix",
		"Mar 7 02:09:33 mx postfix/smtpd[5136]: connect from unknown[203.0.113.67]",
	}
	p := NewParser(time.UTC, refTime)
	var ev event.Event
	for _, l := range lines {
		p.ParseInto(l, &ev) // warm the timestamp cache and zone map
		if n := testing.AllocsPerRun(100, func() { p.ParseInto(l, &ev) }); n != 0 {
			t.Errorf("%d allocs for %q", int(n), l)
		}
	}
}
