package smtpguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/smtpcheck"
)

type backend struct{ g *Guard }

// NewSession runs at the first HELO/EHLO that the filter let through.
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	gc, ok := c.Conn().(*guardConn)
	if !ok {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: internal error"}
	}
	s := &session{g: b.g, cs: gc.cs, gc: gc}
	gc.cs.sess = s
	return s, nil
}

// session is one SMTP session as go-smtp sees it; it relays each
// transaction live to the upstream.
type session struct {
	g  *Guard
	cs *connState
	gc *guardConn // the client connection (the message is relayed from it)

	from     string
	null     bool // MAIL FROM:<>
	mailOpts *smtp.MailOptions
	rcpts    []string

	greyCredited bool // this session already counted toward greylist.auto_allowlist

	upMu     sync.Mutex // held while the session goroutine uses up
	up       *upstream
	upMail   bool            // MAIL sent upstream in this transaction
	upMailRj *smtp.SMTPError // upstream refused MAIL
	dataOpen bool            // upstream answered 354
}

func smtpErr(reply string) *smtp.SMTPError {
	code, dsn, text := splitReply(reply)
	e := &smtp.SMTPError{Code: code, Message: text}
	if ec, ok := parseEnhancedCode(dsn); ok {
		e.EnhancedCode = ec
	}
	return e
}

// parseEnhancedCode parses "class.subject.detail" (RFC 3463), each a
// number of at most three digits.
func parseEnhancedCode(s string) (smtp.EnhancedCode, bool) {
	var ec smtp.EnhancedCode
	for i := range ec {
		f, rest, more := strings.Cut(s, ".")
		if f == "" || len(f) > 3 || more != (i < 2) {
			return smtp.EnhancedCode{}, false
		}
		for _, c := range []byte(f) {
			if c < '0' || c > '9' {
				return smtp.EnhancedCode{}, false
			}
			ec[i] = ec[i]*10 + int(c-'0')
		}
		s = rest
	}
	return ec, true
}

// check applies act to a failed check: an event (abuse only for reject)
// and, for reject, the error to answer.
func (s *session) check(act Action, stage, reply string, reason event.Reason, to string) *smtp.SMTPError {
	switch act {
	case Reject:
		s.g.rejectEnv(s.cs, stage, reply, reason, true, s.from, to)
		return smtpErr(reply)
	case Warn:
		s.g.rejectEnv(s.cs, stage, "warn: "+reply, reason, false, s.from, to)
	}
	return nil
}

// checkHelo returns the reply for a HELO name the checks refuse, or "".
func (g *Guard) checkHelo(cs *connState, verb, name string) string {
	ch := g.cfg.Checks
	helo := func(act Action, reply string, reason event.Reason) string {
		if act == Off {
			return ""
		}
		code, dsn, text := splitReply(reply)
		old := cs.helo
		cs.helo = name
		raw := fmt.Sprintf("NOQUEUE: reject: %s from unknown[%s]: %s; proto=%s helo=<%s>", verb, cs.ip, reply, verb, sanitize(name, 100))
		if act == Warn {
			raw = strings.Replace(raw, "reject:", "reject_warning:", 1)
		}
		g.emit(cs, event.Event{Kind: event.KindReject, Stage: verb, Code: code, DSN: dsn, Reason: reason,
			Detail: text, Abuse: act == Reject, Helo: sanitize(name, 255), Raw: raw})
		cs.helo = old
		if act == Warn {
			return ""
		}
		return reply
	}
	p := smtpcheck.CheckHelo(name, sanitize(name, 255), g.heloDeny, ch.HeloDeny != Off, ch.HeloFQDN != Off)
	switch p.Check {
	case "helo_deny":
		return helo(ch.HeloDeny, p.Reply, p.Reason)
	case "helo_fqdn":
		return helo(ch.HeloFQDN, p.Reply, p.Reason)
	}
	return ""
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}

func fqdnAddress(addr string) bool {
	d := domainOf(addr)
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		return true
	}
	return strings.Contains(d, ".") && validDomain(d)
}

func badAddress(a string) bool {
	if !utf8.ValidString(a) || len(a) > 320 {
		return true
	}
	for i := 0; i < len(a); i++ {
		if a[i] < 0x20 || a[i] == 0x7f {
			return true
		}
	}
	return false
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	g := s.g
	s.from = from
	if badAddress(from) {
		s.from = sanitize(from, 100)
		return s.check(Reject, "MAIL", "501 5.1.7 Bad sender address syntax", event.ReasonSenderAccess, "")
	}
	if from != "" {
		ch := g.cfg.Checks
		if ch.SenderFQDN != Off && !fqdnAddress(from) {
			if e := s.check(ch.SenderFQDN, "MAIL", "504 5.5.2 <"+from+">: Sender address rejected: need fully-qualified address", event.ReasonSenderNonFQDN, ""); e != nil {
				return e
			}
		}
		if ch.SenderDomainDNS != Off && g.resolver != nil {
			if e := s.checkSenderDomain(from); e != nil {
				return e
			}
		}
	}
	s.null = from == ""
	s.mailOpts = opts
	return nil
}

func (s *session) checkSenderDomain(from string) *smtp.SMTPError {
	d := domainOf(from)
	if d == "" || strings.HasPrefix(d, "[") {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.g.cfg.DNSBL.Timeout.D())
	defer cancel()
	act := s.g.cfg.Checks.SenderDomainDNS
	_, err := s.g.resolver.LookupMX(ctx, d)
	if errors.Is(err, ErrNotFound) {
		_, err = s.g.resolver.LookupIP(ctx, d, true)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return s.check(act, "MAIL", "550 5.1.8 <"+from+">: Sender address rejected: Domain not found", event.ReasonSenderDomainNotFound, "")
	default:
		// A DNS failure is ours, not the client's: temporary, not evidence.
		reply := "451 4.1.8 <" + from + ">: Sender address rejected: Domain lookup failed"
		s.g.rejectEnv(s.cs, "MAIL", reply, event.ReasonOther, false, from, "")
		if act == Reject {
			return smtpErr(reply)
		}
		return nil
	}
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	g := s.g
	ch := g.cfg.Checks
	if badAddress(to) {
		return s.check(Reject, "RCPT", "501 5.1.3 Bad recipient address syntax", event.ReasonRecipientAccess, sanitize(to, 100))
	}
	dom := domainOf(to)
	if ch.RecipientFQDN != Off && !fqdnAddress(to) && !strings.EqualFold(to, "postmaster") {
		if e := s.check(ch.RecipientFQDN, "RCPT", "504 5.5.2 <"+to+">: Recipient address rejected: need fully-qualified address", event.ReasonRecipientNonFQDN, to); e != nil {
			return e
		}
	}
	if ch.Relay != Off && len(g.domains) > 0 && !g.domains[dom] {
		if e := s.check(ch.Relay, "RCPT", "554 5.7.1 <"+to+">: Relay access denied", event.ReasonRelayDenied, to); e != nil {
			return e
		}
	}
	if ch.UnknownRecipient != Off && len(g.recipients) > 0 && !g.recipients[strings.ToLower(to)] && !g.recipients["@"+dom] {
		if e := s.check(ch.UnknownRecipient, "RCPT", "550 5.1.1 <"+to+">: Recipient address rejected: User unknown in local recipient table", event.ReasonUnknownRecipient, to); e != nil {
			return e
		}
	}
	if e := s.checkFCrDNS(to); e != nil {
		return e
	}
	retry, e := s.greylist(to)
	if e != nil {
		return e
	}
	if why := s.cs.banReason.Load(); why != nil { // banned since the command was read
		return smtpErr(g.bannedEnd(s.cs, *why))
	}
	s.upMu.Lock()
	defer s.upMu.Unlock()
	// go-smtp hands over the address unquoted; Postfix must get it
	// quoted back, or a local part like "a>: b" changes the command
	line := "RCPT TO:<" + event.QuoteLocal(to) + ">"
	sent, e := s.openTransaction(line)
	if e != nil {
		return e
	}
	var err error
	if sent {
		_, err = s.up.read(250)
	} else {
		_, err = s.up.expect(250, line)
	}
	if err != nil {
		return s.upstreamFailed("RCPT", err, to)
	}
	s.rcpts = append(s.rcpts, to)
	if retry != nil {
		if err := g.grey.Commit(retry, !s.greyCredited); err != nil {
			g.log.Warn("guard: greylist commit failed", "ip", s.cs.ip.String(), "err", err)
		}
		s.greyCredited = true
	}
	return nil
}

// checkFCrDNS refuses a client without a forward-confirmed hostname
// (see Checks.FCrDNS). It waits for the lookup admit started; it also
// runs for allowlisted clients (without refusing them) so that their
// name reaches the upstream in XCLIENT.
func (s *session) checkFCrDNS(to string) *smtp.SMTPError {
	g := s.g
	r, ok := s.cs.clientName()
	if !ok || r.err == nil || s.cs.allowlisted {
		return nil
	}
	if !errors.Is(r.err, ErrNotFound) {
		// Our resolver's trouble, not the client's: let it through.
		g.log.Debug("guard: fcrdns lookup failed, client let through", "ip", s.cs.ip.String(), "err", r.err)
		return nil
	}
	reply := "450 4.7.25 Client host rejected: cannot find your hostname, [" + s.cs.ip.String() + "]"
	switch g.cfg.Checks.FCrDNS {
	case Reject:
		// A temporary refusal that DNS may have caused: context, not
		// evidence, and not an error toward the limits (a real MTA
		// without a PTR must not be tarpitted or banned for retrying).
		g.ctr.fcrdns.Add(1)
		g.rejectEnv(s.cs, "RCPT", reply, event.ReasonClientNoRDNS, false, s.from, to)
		s.cs.noCount = true
		return smtpErr(reply)
	case Warn:
		g.rejectEnv(s.cs, "RCPT", "warn: "+reply, event.ReasonClientNoRDNS, false, s.from, to)
	}
	return nil
}

// greylist defers a new triplet (see GreylistConfig). A retry that
// passes comes back to be committed once the upstream accepts it.
func (s *session) greylist(to string) (*greylist.Retry, *smtp.SMTPError) {
	g := s.g
	if g.grey == nil || s.cs.allowlisted {
		return nil, nil
	}
	v, err := g.grey.Check(s.cs.ip, s.from, to)
	if err != nil {
		g.log.Warn("guard: greylist failed, recipient let through", "ip", s.cs.ip.String(), "err", err)
		return nil, nil
	}
	if v.Pass {
		return v.Retry, nil
	}
	g.ctr.greylisted.Add(1)
	reply := greylist.Reply(to, g.cfg.Greylist.InfoURL, v.Wait)
	g.rejectEnv(s.cs, "RCPT", reply, event.ReasonGreylisted, false, s.from, to)
	g.log.Debug("guard: greylisted", "ip", s.cs.ip.String(), "from", s.from, "to", to, "why", v.Reason)
	s.cs.noCount = true
	return nil, smtpErr(reply)
}

// openTransaction connects to the upstream if needed and sends MAIL.
// When the upstream offered PIPELINING, MAIL and rcpt go in one write
// (RFC 2920) and sent is true: the caller reads rcpt's reply.
func (s *session) openTransaction(rcpt string) (sent bool, _ *smtp.SMTPError) {
	if s.upMailRj != nil {
		return false, s.upMailRj
	}
	if s.up == nil {
		u, err := dialUpstream(&s.g.cfg, s.cs, s.cs.local)
		if err != nil {
			s.g.ctr.upstreamErrors.Add(1)
			s.g.log.Warn("guard: upstream", "ip", s.cs.ip.String(), "err", err)
			return false, errUpstream
		}
		s.up = u
	}
	if !s.upMail {
		line := "MAIL FROM:<" + event.QuoteLocal(s.from) + ">"
		if o := s.mailOpts; o != nil {
			if o.Size > 0 {
				line += fmt.Sprintf(" SIZE=%d", o.Size)
			}
			if o.Body == smtp.Body8BitMIME && s.cs.heloCmd == "EHLO" {
				line += " BODY=8BITMIME"
			}
		}
		var err error
		if s.up.pipelining {
			sent = true
			if err = s.up.send(line, rcpt); err == nil {
				_, err = s.up.read(250)
			}
		} else {
			_, err = s.up.expect(250, line)
		}
		if err != nil {
			var r *upstreamReply
			if errors.As(err, &r) && sent {
				// the pipelined RCPT fails too (503); read its reply so
				// the next command's reply is in step
				if _, rerr := s.up.read(250); rerr == nil {
					// accepted without MAIL: cannot happen with an RFC 5321
					// server; drop the upstream rather than trust it
					err = errors.New("upstream accepted RCPT after refusing MAIL")
				} else if !errors.As(rerr, new(*upstreamReply)) {
					err = rerr
				}
			}
			e := s.upstreamFailed("MAIL", err, "")
			if errors.As(err, &r) {
				s.upMailRj = e
			}
			return false, e
		}
		s.upMail = true
	}
	return sent, nil
}

// upstreamFailed relays an upstream refusal (with an event) or turns an
// I/O failure into a temporary error and drops the upstream.
func (s *session) upstreamFailed(stage string, err error, to string) *smtp.SMTPError {
	var r *upstreamReply
	if errors.As(err, &r) {
		text := r.text()
		code, dsn, reason := splitReply(text)
		c := event.Classify(event.Reply{Code: code, DSN: dsn, Text: reason, Stage: stage,
			From: event.QuoteLocal(s.from), To: event.QuoteLocal(to), Helo: event.HeloAsLogged(s.cs.helo),
			Client: s.cs.clientSpec(), Envelope: true})
		s.g.rejectEnv(s.cs, stage, text, c.Reason, c.Abuse && !s.g.upLogged, s.from, to)
		return r.smtpError()
	}
	s.g.ctr.upstreamErrors.Add(1)
	s.g.log.Warn("guard: upstream", "ip", s.cs.ip.String(), "stage", stage, "err", err)
	s.up.abort()
	s.up = nil
	s.upMail, s.dataOpen = false, false
	return errUpstream
}

// beforeData runs when the client sends DATA, before go-smtp answers
// 354: the multi-recipient bounce check and the upstream's DATA. It
// returns a reply to send instead of passing DATA on, or "".
func (s *session) beforeData() string {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if len(s.rcpts) == 0 || s.up == nil || !s.upMail {
		return "" // go-smtp answers 502 5.5.1 Missing RCPT TO
	}
	if act := s.g.cfg.Checks.MultiRecipientBounce; act != Off && s.null && len(s.rcpts) > 1 {
		if e := s.check(act, "DATA", "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce", event.ReasonMultiRecipientBounce, s.rcpts[0]); e != nil {
			return "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce"
		}
	}
	if err := s.up.data(); err != nil {
		e := s.upstreamFailed("DATA", err, "")
		return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
	}
	s.dataOpen = true
	return ""
}

func (s *session) Data(r io.Reader) error {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if !s.dataOpen || s.up == nil {
		io.Copy(io.Discard, r)
		return errUpstream
	}
	s.dataOpen = false
	reply, readErr, err := s.up.relayMessage(s.gc, int64(s.g.cfg.Limits.MaxMessageBytes))
	if errors.Is(readErr, errBanned) {
		s.up.abort() // without the final dot: nothing of it is delivered
		s.up = nil
		s.upMail = false
		return smtpErr(s.g.bannedEnd(s.cs, *s.cs.banReason.Load()))
	}
	if readErr != nil {
		// The client broke off (timeout, size limit): drop the upstream
		// without the final dot so nothing half is delivered.
		s.up.abort()
		s.up = nil
		s.upMail = false
		var se *smtp.SMTPError
		if errors.As(readErr, &se) {
			return se
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: message transfer failed"}
	}
	if err != nil {
		s.upMail = false
		return s.upstreamFailed("END-OF-MESSAGE", err, "")
	}
	s.upMail = false
	s.cs.messages++
	s.g.ctr.messages.Add(1)
	qid := ""
	if i := strings.LastIndex(reply, "queued as "); i >= 0 {
		qid = strings.TrimSpace(reply[i+10:])
	}
	s.g.emit(s.cs, event.Event{Kind: event.KindReceived, Stage: "END-OF-MESSAGE", QueueID: qid, Code: 250,
		From: s.from, To: strings.Join(s.rcpts, ","),
		Raw: fmt.Sprintf("%s: client=unknown[%s]", qid, s.cs.ip)})
	e := smtpErr("250 " + reply)
	if e.EnhancedCode == (smtp.EnhancedCode{}) {
		e.EnhancedCode = smtp.EnhancedCode{2, 0, 0}
	}
	return e
}

func (s *session) Reset() {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.up != nil && s.upMail {
		if _, err := s.up.expect(250, "RSET"); err != nil {
			s.up.abort()
			s.up = nil
		}
	}
	s.from, s.null, s.mailOpts, s.rcpts = "", false, nil, nil
	s.upMail, s.upMailRj, s.dataOpen = false, nil, false
}

func (s *session) Logout() error {
	s.closeUpstream()
	return nil
}

// releaseUpstream ends the upstream session of a client about to be
// tarpitted if no recipient of its transaction was accepted: the upstream
// serves a limited number of sessions (Postfix: smtpd's process limit),
// and a dictionary attacker waiting out its error delays must not hold
// one. The next RCPT opens a fresh session (MAIL is sent again).
func (s *session) releaseUpstream() {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.up == nil || len(s.rcpts) > 0 || s.dataOpen {
		return
	}
	s.up.close()
	s.up = nil
	s.upMail = false // a refused MAIL (upMailRj) stays refused without a new session
}

// closeUpstream ends the upstream session politely (QUIT). go-smtp
// calls it (through Logout and the connection's Close) on the session
// goroutine once no command is running, so the lock is free; Shutdown
// ends busy sessions by closing their client sockets, not from here.
func (s *session) closeUpstream() {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.up != nil {
		s.up.close()
		s.up = nil
	}
}
