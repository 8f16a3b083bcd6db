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
		err = p.parseSmtpd(&h, msg, ev)
	case "tlsproxy":
		err = p.parseTLSProxy(&h, msg, ev)
	case "postscreen":
		err = parsePostscreen(msg, ev)
	case "cleanup":
		err = parseCleanup(msg, ev)
	case "master":
		p.masterLine(&h)
		err = ErrUnrecognized // context: nothing about a client
	case "qmgr", "oqmgr":
		err = parseQmgr(msg, ev)
	case "smtp", "lmtp", "local", "virtual", "pipe", "error", "retry", "discard":
		err = parseDelivery(msg, ev)
	default:
		err = ErrUnrecognized
	}
	if err == ErrUnrecognized && isContext(&h) {
		return ErrContext
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

func (p *Parser) parseSmtpd(h *header, msg string, ev *event.Event) error {
	switch {
	case strings.HasPrefix(msg, "connect from "):
		if _, ok := cutClient(msg[13:], ev); !ok {
			return ErrUnrecognized
		}
		ev.Kind = event.KindConnect
		p.sessions.set(h, ev)
		return nil
	case strings.HasPrefix(msg, "disconnect from "):
		rest, ok := cutClient(msg[16:], ev)
		if !ok {
			return ErrUnrecognized
		}
		ev.Kind = event.KindDisconnect
		parseStats(strings.TrimPrefix(rest, " "), ev)
		p.sessions.clear(h)
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
		ev.Kind, ev.Abuse = event.KindLostConnection, !event.AfterData(ev.Stage) && ev.Stage != "CONNECT"
		return nil
	case strings.HasPrefix(msg, "timeout after "):
		if _, ok := stageFrom(msg[14:], ev); !ok {
			return ErrUnrecognized
		}
		ev.Kind, ev.Abuse = event.KindTimeout, !event.AfterData(ev.Stage)
		return nil
	case strings.HasPrefix(msg, "warning: "):
		w := msg[9:]
		if text, ok := strings.CutPrefix(w, "TLS library problem: "); ok {
			p.parseTLSProblem(text, h, ev)
			return nil
		}
		return parseSmtpdWarning(w, ev)
	case strings.HasPrefix(msg, "SSL_accept error from "):
		return parseSSLAccept(msg, ev)
	}
	id, rest, ok := cutQueueID(msg)
	if !ok {
		return ErrUnrecognized
	}
	ev.QueueID = id
	switch {
	case strings.HasPrefix(rest, "reject: "):
		return parseReject(rest[8:], ev)
	case strings.HasPrefix(rest, "reject_warning: "):
		// warn_if_reject: what would have been rejected, classified
		// alike, never evidence (nothing was refused)
		if err := parseReject(rest[16:], ev); err != nil {
			return err
		}
		ev.Kind, ev.Abuse = event.KindRejectWarning, false
		return nil
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

// parseTLSProxy reads tlsproxy(8)'s failed handshakes (postscreen's
// STARTTLS); its other lines are context.
func (p *Parser) parseTLSProxy(h *header, msg string, ev *event.Event) error {
	switch {
	case strings.HasPrefix(msg, "SSL_accept error from "):
		return parseSSLAccept(msg, ev)
	case strings.HasPrefix(msg, "warning: TLS library problem: "):
		p.parseTLSProblem(msg[30:], h, ev)
		return nil
	}
	return ErrUnrecognized
}

func parseSmtpdWarning(w string, ev *event.Event) error {
	if matched, err := parseRateLimit(w, ev); matched {
		return err
	}
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
	client := s[len(ev.Stage):] // the client spec Postfix quotes in "<NAME[ADDR]>: "
	client = client[strings.Index(client, " from ")+6 : len(client)-len(rest)]
	client = client[:strings.LastIndexByte(client, ']')+1] // without ":port"
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
	reply := event.Reply{Code: ev.Code, DSN: ev.DSN, Stage: ev.Stage, Client: client}
	if t, tr, ok := cutTrailer(text); ok {
		// the trailer smtpd writes, read from the end: its names are
		// the ones the text may quote
		text = t
		ev.From, ev.To, ev.Helo = tr.from, tr.to, tr.helo
		reply.From, reply.To, reply.Helo, reply.Envelope = tr.from, tr.to, tr.helo, true
	} else {
		// Postscreen's comma-separated trailer: its texts are
		// Postfix's own, so the first "; from=<" ends them; smtpd and
		// cleanup lines whose trailer did not read land here too and
		// their "<NAME>: " texts stay unclassified.
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
	}
	reply.Text = text
	c := event.Classify(reply)
	ev.Reason, ev.Abuse, ev.Detail = c.Reason, c.Abuse, c.Detail
	return nil
}

// trailer holds the envelope smtpd and cleanup append to a reject.
type trailer struct{ from, to, helo string }

// cutTrailer splits "TEXT; from=<S> to=<R> proto=P helo=<H>" (each field
// optional, in this order) into TEXT and the fields, reading from the
// end. Every field but the text is unambiguous there: Postfix replaces
// '<', '>', '"', ';', '=' and blanks in the HELO name with '?', and logs
// S and R in external form (a local part with specials in double quotes,
// '"' and '\' escaped), so a quoted local part is read to its opening
// quote. The text, which quotes addresses unquoted, is never searched.
func cutTrailer(s string) (text string, tr trailer, ok bool) {
	if text, tr, ok := cutEnvelope(s); ok {
		return text, tr, true
	}
	// After an AUTH, log_whatsup appends " sasl_method=M[
	// sasl_username=U][ sasl_sender=S]" to the trailer (then the line
	// ends in neither helo=<H> nor the fields before it). U is the
	// authenticated name and may hold anything, " sasl_method=" too, so
	// every candidate is tried from the last; the envelope before it must
	// read whole.
	for end := len(s); ; {
		i := strings.LastIndex(s[:end], " sasl_method=")
		if i < 0 {
			break
		}
		if isSASLTail(s[i+13:]) {
			if text, tr, ok := cutEnvelope(s[:i]); ok {
				return text, tr, true
			}
		}
		end = i
	}
	return s, trailer{}, false
}

// isSASLTail reports whether s, what follows " sasl_method=", is a
// mechanism name that ends the line or is followed by the user name.
func isSASLTail(s string) bool {
	i := 0
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= 'a' && s[i] <= 'z' || isDigit(s[i]) || s[i] == '-' || s[i] == '_') {
		i++
	}
	return i > 0 && (i == len(s) || strings.HasPrefix(s[i:], " sasl_username="))
}

// cutEnvelope is cutTrailer for a trailer that ends with helo=<H> (or the
// field before it).
func cutEnvelope(s string) (text string, tr trailer, ok bool) {
	end := len(s)
	if strings.HasSuffix(s, ">") {
		// no helo when the '>' ends to=<R> or from=<S>, whose quoted
		// local part may hold " helo=<" but then also '>' or '"'
		if i := strings.LastIndexByte(s, '<'); i >= 6 && s[i-6:i] == " helo=" && !strings.ContainsAny(s[i+1:end-1], " >\"") {
			tr.helo = s[i+1 : end-1]
			end = i - 6
		}
	}
	if i := strings.LastIndexByte(s[:end], ' '); i >= 0 && strings.HasPrefix(s[i:end], " proto=") && isWord(s[i+7:end]) {
		end = i
	}
	for _, key := range [...]string{" to=<", " from=<"} {
		if end == 0 || s[end-1] != '>' {
			continue
		}
		open, ok := addrStart(s[:end])
		if !ok || open < len(key)-1 || s[open-len(key)+1:open+1] != key {
			continue
		}
		v := s[open+1 : end-1]
		if key == " to=<" {
			tr.to = v
		} else {
			tr.from = v
		}
		end = open - len(key) + 1
	}
	if end == 0 || end == len(s) || s[end-1] != ';' {
		return s, trailer{}, false
	}
	return s[:end-1], tr, true
}

// isWord reports whether s is a protocol name: "ESMTP", "SMTP".
func isWord(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return s != ""
}

// addrStart finds the '<' that opens the external-form address s ends
// with ("...<addr>").
func addrStart(s string) (int, bool) {
	j := len(s) - 2 // last byte of the address
	if j >= 0 && s[j] == '<' {
		return j, true // <>
	}
	k := j
	for k >= 0 && s[k] != '@' && s[k] != '"' && s[k] != '<' && s[k] != ' ' && s[k] != '>' {
		k--
	}
	if k < 0 {
		return 0, false
	}
	switch {
	case s[k] == '<':
		return k, true // local part only
	case s[k] == '@' && k > 0 && s[k-1] == '"':
		return quoteStart(s, k-1)
	case s[k] == '@':
		for k--; k >= 0 && s[k] != '<'; k-- {
			if c := s[k]; c == ' ' || c == '"' || c == '>' || c == '@' {
				return 0, false
			}
		}
		return k, k >= 0
	case s[k] == '"' && k == j:
		return quoteStart(s, k)
	}
	return 0, false
}

// quoteStart finds the '<' before the quoted string that ends with the
// quote at q. A quote is escaped when an odd run of backslashes precedes it.
func quoteStart(s string, q int) (int, bool) {
	if backslashes(s, q)%2 == 1 {
		return 0, false
	}
	for p := q - 1; p >= 0; p-- {
		if s[p] == '"' && backslashes(s, p)%2 == 0 {
			return p - 1, p > 0 && s[p-1] == '<'
		}
	}
	return 0, false
}

func backslashes(s string, i int) int {
	n := 0
	for i--; i >= 0 && s[i] == '\\'; i-- {
		n++
	}
	return n
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
		// "header Subject: CONTENT from CLIENT; from=<a> to=<b>
		// proto=ESMTP helo=<h>: 5.7.1 text". CONTENT comes from the sender
		// and may imitate " from victim[addr]; from=<". Postfix appends
		// the rest, so it is read from the end: the admin's text after
		// the last ": " that a whole trailer and client spec precede.
		// Mail submitted locally says "from local": no client to blame.
		r := rest[8:]
		for end := len(r); ; {
			i := strings.LastIndex(r[:end], ": ")
			if i < 0 {
				return ErrUnrecognized
			}
			end = i
			head, tr, ok := cutTrailer(r[:i])
			if !ok {
				continue
			}
			j := strings.LastIndex(head, " from ")
			if j < 0 {
				continue
			}
			spec := head[j+6:]
			if spec != "local" {
				name, addr, port, ok := ParseClient(spec)
				if !ok {
					continue
				}
				ev.ClientName, ev.Client, ev.Port, ev.Abuse = name, addr, port, true
			}
			text := r[i+2:]
			if sp := strings.IndexByte(text, ' '); sp > 0 && isDSN(text[:sp]) {
				ev.DSN, text = text[:sp], text[sp+1:]
			}
			ev.From, ev.To, ev.Helo = tr.from, tr.to, tr.helo
			ev.Kind, ev.Stage, ev.Reason, ev.Detail = event.KindReject, "END-OF-MESSAGE", event.ReasonMessageRejected, text
			return nil
		}
	}
	return ErrUnrecognized
}
