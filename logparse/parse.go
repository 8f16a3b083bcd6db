package logparse

import (
	"net/netip"
	"strings"

	"github.com/mxguard/mxguard/internal/event"
)

// Parse parses one log line (without its newline). It returns ErrNotPostfix
// for lines of other programs or without a syslog header, ErrUnrecognized
// for Postfix lines of no interest. It does not allocate for lines it skips.
func (p *Parser) Parse(line string) (event.Event, error) {
	var ev event.Event
	err := p.ParseInto(line, &ev)
	return ev, err
}

// ParseInto is Parse writing into *ev, which it overwrites completely.
func (p *Parser) ParseInto(line string, ev *event.Event) error {
	*ev = event.Event{}
	h, err := p.parseHeader(line)
	if err != nil {
		return err
	}
	ev.Time, ev.Host, ev.Service, ev.PID, ev.Raw = h.t, h.host, h.program, h.pid, line
	msg := h.msg
	switch h.daemon {
	case "smtpd":
		err = parseSmtpd(msg, ev)
	case "postscreen":
		err = parsePostscreen(msg, ev)
	case "cleanup":
		err = parseCleanup(msg, ev)
	case "qmgr", "oqmgr":
		err = parseQmgr(msg, ev)
	case "smtp", "lmtp", "local", "virtual", "pipe", "error", "retry", "discard":
		err = parseDelivery(msg, ev)
	default:
		err = ErrUnrecognized
	}
	return err
}

// cutQueueID splits "QUEUEID: rest". Queue ids are short hex ("4F2A31C0B2")
// or long base-52 ("4bGhL23xYzz1Rt"); "NOQUEUE" gives "".
func cutQueueID(msg string) (id, rest string, ok bool) {
	if strings.HasPrefix(msg, "NOQUEUE: ") {
		return "", msg[9:], true
	}
	i := strings.IndexByte(msg, ':')
	if i < 5 || i > 20 || i+1 >= len(msg) || msg[i+1] != ' ' {
		return "", msg, false
	}
	for j := 0; j < i; j++ {
		c := msg[j]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return "", msg, false
		}
	}
	return msg[:i], msg[i+2:], true
}

// parseClient reads "name[addr]" or "[addr]", with an optional ":port",
// from the start of s and returns what follows.
func parseClient(s string) (name string, addr netip.Addr, port int, rest string, ok bool) {
	open := strings.IndexByte(s, '[')
	if open < 0 {
		return "", addr, 0, s, false
	}
	closeIdx := strings.IndexByte(s[open:], ']')
	if closeIdx < 0 {
		return "", addr, 0, s, false
	}
	closeIdx += open
	name = s[:open]
	if strings.IndexByte(name, ' ') >= 0 {
		return "", addr, 0, s, false
	}
	a, ok := parseAddr(s[open+1 : closeIdx])
	if !ok {
		return "", addr, 0, s, false
	}
	rest = s[closeIdx+1:]
	if len(rest) > 1 && rest[0] == ':' && rest[1] >= '0' && rest[1] <= '9' {
		j := 1
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if p, ok := atoi(rest[1:j]); ok && p <= 65535 {
			port = p
			rest = rest[j:]
		}
	}
	return name, a, port, rest, true
}

// ParseClient parses a Postfix client spec ("name[1.2.3.4]:port",
// "[2001:db8::1]", "unknown[192.0.2.1]") as a whole.
func ParseClient(s string) (name string, addr netip.Addr, port int, ok bool) {
	name, addr, port, rest, ok := parseClient(s)
	if !ok || rest != "" {
		return "", netip.Addr{}, 0, false
	}
	return name, addr, port, true
}

// parseAddr parses an IPv4 or IPv6 address as Postfix logs it (possibly with
// an "IPv6:" prefix) and unmaps IPv4-mapped IPv6 addresses.
func parseAddr(s string) (netip.Addr, bool) {
	s = strings.TrimPrefix(s, "IPv6:")
	if len(s) < 2 || len(s) > 45 || strings.IndexByte(s, '%') >= 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// cutClient reads a client spec and stores it in ev.
func cutClient(s string, ev *event.Event) (rest string, ok bool) {
	name, a, port, rest, ok := parseClient(s)
	if !ok {
		return s, false
	}
	ev.ClientName, ev.Client, ev.Port = name, a, port
	return rest, true
}

// stageFrom reads "STAGE from CLIENT" (STAGE may be "DATA (0 bytes)") and
// stores the stage word and the client in ev.
func stageFrom(s string, ev *event.Event) (rest string, ok bool) {
	i := 0
	for i < len(s) && i < 40 && s[i] != ' ' {
		i++
	}
	if i == 0 || i >= len(s) {
		return s, false
	}
	ev.Stage = s[:i]
	r := s[i:]
	if strings.HasPrefix(r, " (") { // "DATA (1234 bytes)"
		j := strings.IndexByte(r, ')')
		if j < 0 || j > 40 {
			return s, false
		}
		r = r[j+1:]
	}
	if !strings.HasPrefix(r, " from ") {
		return s, false
	}
	return cutClient(r[6:], ev)
}

// afterDataStage reports whether a dropped session had reached the message
// content: a lost connection there is a network problem, not abuse.
func afterDataStage(stage string) bool {
	return stage == "DATA" || stage == "END-OF-MESSAGE" || stage == "BDAT"
}

func parseSmtpd(msg string, ev *event.Event) error {
	switch {
	case strings.HasPrefix(msg, "connect from "):
		if _, ok := cutClient(msg[13:], ev); !ok {
			return ErrUnrecognized
		}
		ev.Kind = event.KindConnect
		return nil
	case strings.HasPrefix(msg, "disconnect from "):
		rest, ok := cutClient(msg[16:], ev)
		if !ok {
			return ErrUnrecognized
		}
		ev.Kind = event.KindDisconnect
		parseStats(strings.TrimPrefix(rest, " "), ev)
		return nil
	case strings.HasPrefix(msg, "improper command pipelining after "):
		rest, ok := stageFrom(msg[34:], ev)
		if !ok {
			return ErrUnrecognized
		}
		ev.Kind, ev.Abuse = event.KindPipelining, true
		ev.Detail = strings.TrimPrefix(rest, ": ")
		return nil
	case strings.HasPrefix(msg, "too many errors after "):
		if _, ok := stageFrom(msg[22:], ev); !ok {
			return ErrUnrecognized
		}
		ev.Kind, ev.Abuse = event.KindTooManyErrors, true
		return nil
	case strings.HasPrefix(msg, "lost connection after "):
		if _, ok := stageFrom(msg[22:], ev); !ok {
			return ErrUnrecognized
		}
		// A client that connects and drops (a port scan, a TCP health
		// check) is not by itself evidence of abuse.
		ev.Kind, ev.Abuse = event.KindLostConnection, !afterDataStage(ev.Stage) && ev.Stage != "CONNECT"
		return nil
	case strings.HasPrefix(msg, "timeout after "):
		if _, ok := stageFrom(msg[14:], ev); !ok {
			return ErrUnrecognized
		}
		ev.Kind, ev.Abuse = event.KindTimeout, !afterDataStage(ev.Stage)
		return nil
	case strings.HasPrefix(msg, "warning: "):
		return parseSmtpdWarning(msg[9:], ev)
	}
	id, rest, ok := cutQueueID(msg)
	if !ok {
		return ErrUnrecognized
	}
	ev.QueueID = id
	switch {
	case strings.HasPrefix(rest, "reject: "):
		return parseReject(rest[8:], ev)
	case strings.HasPrefix(rest, "milter-reject: "):
		if err := parseReject(rest[15:], ev); err != nil {
			return err
		}
		if ev.Reason == event.ReasonOther {
			ev.Reason = event.ReasonMessageRejected
		}
		return nil
	case id != "" && strings.HasPrefix(rest, "client="):
		r, ok := cutClient(rest[7:], ev)
		if !ok {
			return ErrUnrecognized
		}
		ev.Kind = event.KindReceived
		if i := strings.Index(r, "sasl_username="); i >= 0 {
			u := r[i+14:]
			if j := strings.IndexByte(u, ','); j >= 0 {
				u = u[:j]
			}
			ev.Kind, ev.Detail, ev.Stage = event.KindSASLLogin, u, "AUTH"
		}
		return nil
	}
	return ErrUnrecognized
}

func parseSmtpdWarning(w string, ev *event.Event) error {
	switch {
	case strings.HasPrefix(w, "non-SMTP command from "):
		rest, ok := cutClient(w[22:], ev)
		if !ok {
			return ErrUnrecognized
		}
		ev.Kind, ev.Abuse = event.KindNonSMTP, true
		ev.Detail = strings.TrimPrefix(rest, ": ")
		return nil
	case strings.HasPrefix(w, "hostname "):
		// hostname NAME does not resolve to address ADDR[: reason]
		name, rest, ok := strings.Cut(w[9:], " does not resolve to address ")
		if !ok {
			return ErrUnrecognized
		}
		addr := rest // optionally followed by ": reason"
		if i := strings.Index(rest, ": "); i >= 0 {
			addr = rest[:i]
		}
		a, ok := parseAddr(addr)
		if !ok {
			return ErrUnrecognized
		}
		ev.Kind, ev.Client, ev.ClientName = event.KindHostnameMismatch, a, name
		return nil
	}
	// "name[addr]: SASL LOGIN authentication failed: text[, sasl_username=u]"
	rest, ok := cutClient(w, ev)
	if !ok || !strings.HasPrefix(rest, ": SASL ") {
		return ErrUnrecognized
	}
	rest = rest[7:]
	i := strings.Index(rest, " authentication failed")
	if i < 0 || i > 30 {
		return ErrUnrecognized
	}
	ev.Kind, ev.Stage, ev.Abuse = event.KindSASLFail, "AUTH", true
	text := rest[i+22:]
	// ", sasl_username=" comes last and its value is the client's: search
	// the server's reason only in what precedes it.
	if j := strings.Index(text, ", sasl_username="); j >= 0 {
		ev.Detail = text[j+16:]
		text = text[:j]
	}
	// The auth server went away: nothing the client did.
	if strings.Contains(text, "Connection lost to authentication server") {
		ev.Abuse = false
	}
	return nil
}

// parseStats reads smtpd's disconnect statistics ("ehlo=1 auth=0/1
// quit=1 commands=2/3"). Failed AUTH, VRFY, EXPN, unknown commands and
// MAIL without HELO are evidence that shows up nowhere else; failed RCPT
// and MAIL were already logged as rejects and are not counted again.
func parseStats(s string, ev *event.Event) {
	ev.Detail = s
	sawHelo := false
	mailFail := 0
	bad := 0
	for s != "" {
		var tok string
		tok, s, _ = strings.Cut(s, " ")
		name, val, ok := strings.Cut(tok, "=")
		if !ok {
			continue
		}
		okN, total := 0, 0
		if a, b, slash := strings.Cut(val, "/"); slash {
			okN, _ = atoi(a)
			total, _ = atoi(b)
		} else {
			okN, _ = atoi(val)
			total = okN
		}
		failed := total - okN
		switch name {
		case "helo", "ehlo":
			sawHelo = true
		case "auth", "vrfy", "expn", "unknown":
			bad += failed
		case "mail":
			mailFail = failed
		}
	}
	if !sawHelo {
		bad += mailFail
	}
	ev.Count = bad
	ev.Abuse = bad > 0
}

// parseReject reads "STAGE from CLIENT: 550 5.1.1 TEXT; from=<a> to=<b>
// proto=ESMTP helo=<h>" (smtpd) or the comma-separated postscreen form.
func parseReject(s string, ev *event.Event) error {
	rest, ok := stageFrom(s, ev)
	if !ok || !strings.HasPrefix(rest, ": ") {
		return ErrUnrecognized
	}
	ev.Kind = event.KindReject
	text := rest[2:]
	if len(text) > 4 && text[3] == ' ' && isDigit(text[0]) && isDigit(text[1]) && isDigit(text[2]) {
		ev.Code = int(text[0]-'0')*100 + int(text[1]-'0')*10 + int(text[2]-'0')
		text = text[4:]
	}
	if sp := strings.IndexByte(text, ' '); sp > 0 && isDSN(text[:sp]) {
		ev.DSN = text[:sp]
		text = text[sp+1:]
	}
	// Trailer: "; from=<" ("; to=<" for VRFY, "; proto=" for CONNECT and
	// HELO stages). Reject
	// texts may hold "; " themselves (DNSBL replies), never these.
	for off := 0; ; {
		i := strings.IndexByte(text[off:], ';')
		if i < 0 {
			break
		}
		i += off
		t := text[i+1:]
		if strings.HasPrefix(t, " from=<") || strings.HasPrefix(t, " to=<") || strings.HasPrefix(t, " proto=") {
			parseTrailer(t[1:], ev)
			text = text[:i]
			break
		}
		off = i + 1
	}
	classifyReject(text, ev)
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isDSN reports whether s is an enhanced status code: "5.1.1", "4.7.25".
func isDSN(s string) bool {
	if len(s) < 5 || len(s) > 11 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.' {
		return false
	}
	dots := 0
	for i := 2; i < len(s); i++ {
		switch {
		case s[i] == '.':
			if s[i-1] == '.' {
				return false
			}
			dots++
		case !isDigit(s[i]):
			return false
		}
	}
	return dots == 1 && s[len(s)-1] != '.'
}

// parseTrailer reads `from=<a> to=<b> proto=ESMTP helo=<h>`; postscreen
// separates the fields with ", ". helo is last and may contain anything.
func parseTrailer(t string, ev *event.Event) {
	if strings.HasPrefix(t, "from=<") {
		if v, r, ok := cutAngle(t[6:]); ok {
			ev.From, t = v, r
		}
	}
	if i := strings.Index(t, "to=<"); i >= 0 && i < 3 {
		if v, r, ok := cutAngle(t[i+4:]); ok {
			ev.To, t = v, r
		}
	}
	if i := strings.Index(t, "helo=<"); i >= 0 && strings.HasSuffix(t, ">") {
		ev.Helo = t[i+6 : len(t)-1]
	}
}

// cutAngle reads an address up to the '>' that ends the field (followed by
// a space, a comma or the end), so that '>' inside quotes does not end it.
func cutAngle(s string) (val, rest string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '>' && (i+1 == len(s) || s[i+1] == ' ' || s[i+1] == ',') {
			return s[:i], s[i+1:], true
		}
	}
	return "", s, false
}

// classifyReject sets event.Reason, Detail and Abuse from a reject text such as
// "<u@example.com>: Recipient address rejected: User unknown in ...".
func classifyReject(text string, ev *event.Event) {
	if len(text) > 0 && text[0] == '<' {
		if i := strings.Index(text, ">: "); i >= 0 {
			text = text[i+3:]
		}
	}
	ev.Detail = text
	r := event.ReasonOther
	switch {
	case strings.HasSuffix(text, "Improper use of SMTP command pipelining"):
		// reject_unauth_pipelining, whatever restriction class ran it
		r = event.ReasonPipelining
	case strings.HasPrefix(text, "Recipient address rejected: "):
		t := text[28:]
		switch {
		case strings.HasPrefix(t, "User unknown"), strings.HasPrefix(t, "undeliverable address"),
			strings.HasPrefix(t, "unverified address"):
			r = event.ReasonUnknownRecipient
		case strings.HasPrefix(t, "need fully-qualified address"):
			r = event.ReasonRecipientNonFQDN
		case strings.HasPrefix(t, "Domain not found"):
			r = event.ReasonRecipientDomainNotFound
		case strings.Contains(t, "reylist"):
			r = event.ReasonGreylisted
		default:
			r = event.ReasonRecipientAccess
		}
	case strings.HasPrefix(text, "Relay access denied"):
		r = event.ReasonRelayDenied
	case strings.HasPrefix(text, "Helo command rejected: "):
		t := text[23:]
		switch {
		case strings.HasPrefix(t, "need fully-qualified hostname"):
			r = event.ReasonHeloNonFQDN
		case strings.HasPrefix(t, "Invalid name"), strings.HasPrefix(t, "invalid ip address"):
			r = event.ReasonHeloInvalid
		case strings.HasPrefix(t, "Host not found"):
			r = event.ReasonHeloNotFound
		default:
			r = event.ReasonHeloAccess
		}
	case strings.HasPrefix(text, "Sender address rejected: "):
		t := text[25:]
		switch {
		case strings.HasPrefix(t, "need fully-qualified address"):
			r = event.ReasonSenderNonFQDN
		case strings.HasPrefix(t, "Domain not found"):
			r = event.ReasonSenderDomainNotFound
		default:
			r = event.ReasonSenderAccess
		}
	case strings.HasPrefix(text, "Client host rejected: "):
		if strings.HasPrefix(text[22:], "cannot find your") {
			r = event.ReasonClientNoRDNS
		} else {
			r = event.ReasonClientAccess
		}
	case strings.HasPrefix(text, "Data command rejected: Multi-recipient bounce"):
		r = event.ReasonMultiRecipientBounce
	case strings.HasPrefix(text, "Service currently unavailable") && ev.Code == 450:
		r = event.ReasonServiceUnavailable
	case strings.HasPrefix(text, "Protocol error"):
		r = event.ReasonProtocolError
	case strings.HasPrefix(text, "Authentication required"):
		r = event.ReasonAuthRequired
	case ev.Stage == "END-OF-MESSAGE" || ev.Stage == "DATA" && ev.Code >= 500:
		r = event.ReasonMessageRejected
	}
	// reject_rbl_client and postscreen: "Service unavailable; [Cc]lient
	// host [addr] blocked using ZONE[; reason]"
	if i := strings.Index(text, " blocked using "); i >= 0 && strings.HasPrefix(text, "Service unavailable; ") {
		r = event.ReasonDNSBL
		zone := text[i+15:]
		if j := strings.IndexAny(zone, "; ,"); j >= 0 {
			zone = zone[:j]
		}
		ev.Detail = zone
	}
	ev.Reason = r
	switch {
	case r == event.ReasonServiceUnavailable, r == event.ReasonGreylisted:
		ev.Abuse = false
	case r == event.ReasonOther && ev.Code/100 == 4:
		// temporary trouble on our side (lookup failure, too many recipients)
		ev.Abuse = false
	case r == event.ReasonClientNoRDNS && ev.Code/100 == 4:
		// reject_unknown_client_hostname's default 450: DNS may be at
		// fault, and a real MTA retries; banning it would be wrong
		ev.Abuse = false
	default:
		ev.Abuse = true
	}
}

// parseCleanup reads the rejects cleanup(8) logs: milter rejects at the end
// of the message ("QID: milter-reject: END-OF-MESSAGE from CLIENT: 5.7.1
// text; from=<a> to=<b> proto=ESMTP helo=<h>") and header/body checks
// ("QID: reject: header Subject: x from CLIENT; from=<a> to=<b>
// proto=ESMTP helo=<h>: 5.7.1 text").
func parseCleanup(msg string, ev *event.Event) error {
	id, rest, ok := cutQueueID(msg)
	if !ok || id == "" {
		return ErrUnrecognized
	}
	ev.QueueID = id
	switch {
	case strings.HasPrefix(rest, "milter-reject: "):
		if err := parseReject(rest[15:], ev); err != nil {
			return err
		}
		if ev.Reason == event.ReasonOther {
			ev.Reason = event.ReasonMessageRejected
		}
		return nil
	case strings.HasPrefix(rest, "reject: header "), strings.HasPrefix(rest, "reject: body "):
		// "header Subject: TEXT from CLIENT; from=<a> to=<b> proto=ESMTP
		// helo=<h>: 5.7.1 text". TEXT, the addresses and the HELO come from
		// the sender and may imitate " from victim[addr]; from=<": the line
		// is evidence only when exactly one client spec fits.
		r := rest[8:]
		var after string
		found := 0
		var probe event.Event
		for off := 0; ; {
			i := strings.Index(r[off:], " from ")
			if i < 0 {
				break
			}
			i += off
			if a, ok := cutClient(r[i+6:], &probe); ok && strings.HasPrefix(a, "; from=<") {
				found++
				if found == 1 {
					ev.ClientName, ev.Client, ev.Port, after = probe.ClientName, probe.Client, probe.Port, a
				}
			}
			off = i + 6
		}
		if found == 0 {
			return ErrUnrecognized
		}
		trailer := after[2:]
		j := strings.LastIndex(trailer, ">: ")
		if j < 0 {
			return ErrUnrecognized
		}
		parseTrailer(trailer[:j+1], ev)
		text := trailer[j+3:]
		if sp := strings.IndexByte(text, ' '); sp > 0 && isDSN(text[:sp]) {
			ev.DSN, text = text[:sp], text[sp+1:]
		}
		ev.Kind, ev.Stage, ev.Reason, ev.Detail, ev.Abuse = event.KindReject, "END-OF-MESSAGE", event.ReasonMessageRejected, text, true
		if found > 1 {
			// forged client spec in the checked text or the envelope:
			// count the reject, blame nobody
			ev.Client, ev.ClientName, ev.Port, ev.Abuse = netip.Addr{}, "", 0, false
			ev.From, ev.To, ev.Helo = "", "", ""
		}
		return nil
	}
	return ErrUnrecognized
}
