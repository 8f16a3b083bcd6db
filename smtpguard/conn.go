package smtpguard

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// connState is what the guard knows about one client connection. It is
// used by the session's goroutine only (after admit), so it needs no lock;
// banReason and banKill are the exceptions (EndBanned sets them).
type connState struct {
	g           *Guard
	id          uint64
	ip          netip.Addr
	port        int
	local       net.Addr
	start       time.Time
	allowlisted bool

	stage    string // last command verb, for "after X" events
	helo     string
	heloCmd  string // HELO or EHLO
	esmtp    bool   // an EHLO reply (with PIPELINING) was sent
	tls      bool
	needHelo bool // after STARTTLS: HELO/EHLO again before anything else
	commands int
	errors   int
	messages int
	verdict  string
	sess     *session
	noCount  bool // the next error reply is not counted (greylisting)

	banReason atomic.Pointer[string] // set once: the client was banned during the session
	banKill   chan struct{}          // closed with banReason: cuts a tarpit sleep short
	banEnded  bool                   // the 421 for the ban was sent or handed to go-smtp

	// FCrDNS: the lookup started in admit, its result once waited for.
	rdnsCh   chan rdnsResult
	rdnsDone bool
	rdns     rdnsResult
}

type rdnsResult struct {
	name string // confirmed name, or ""
	err  error  // nil, ErrNotFound or a DNS failure
}

// clientName waits for the FCrDNS lookup (bounded by dnsbl.timeout) and
// returns its result; ok is false when no lookup was started.
func (cs *connState) clientName() (r rdnsResult, ok bool) {
	if cs.rdnsCh == nil {
		return rdnsResult{}, false
	}
	if !cs.rdnsDone {
		cs.rdns, cs.rdnsDone = <-cs.rdnsCh, true
	}
	return cs.rdns, true
}

// clientSpec is the client as the upstream names it in "<NAME[ADDR]>: "
// replies: the forward-confirmed name the guard passed in XCLIENT, or
// "unknown".
func (cs *connState) clientSpec() string {
	name := "unknown"
	if r, ok := cs.clientName(); ok && r.name != "" {
		name = r.name
	}
	return name + "[" + cs.ip.String() + "]"
}

func (cs *connState) proto() string {
	if cs.heloCmd == "EHLO" {
		return "ESMTP"
	}
	return "SMTP"
}

func (cs *connState) logVerdict() {
	if !cs.g.log.Enabled(context.Background(), slog.LevelInfo) {
		return // the line's values cost allocations even when dropped
	}
	v := cs.verdict
	if v == "" {
		if cs.messages > 0 {
			v = "accepted"
		} else {
			v = "no message"
		}
	}
	cs.g.log.Info("guard: session", "ip", cs.ip.String(), "cid", cs.id, "helo", sanitize(cs.helo, 80),
		"verdict", v, "messages", cs.messages, "commands", cs.commands, "errors", cs.errors,
		"tls", cs.tls, "duration", time.Since(cs.start).Round(time.Millisecond))
}

const (
	modeCommand = iota
	modeData
)

// data state machine, as go-smtp's dataReader (end is <CR><LF>.<CR><LF>)
const (
	stBeginLine = iota
	stDot
	stDotCR
	stCR
	stData
	stEOF
)

var errLineTooLong = errors.New("smtpguard: line too long")

// guardConn sits between the client socket and go-smtp. In command mode
// each Read returns exactly one command line, so every reply go-smtp
// writes comes before the next Read; bytes already buffered when a
// command is handed over were sent before its reply (pipelining).
type guardConn struct {
	c   net.Conn // the client socket (a *tls.Conn after STARTTLS)
	raw net.Conn // the client socket as accepted (for Shutdown)
	cs  *connState
	g   *Guard

	in   []byte // in[r:w] read from the client, not yet handed over
	r, w int
	out  []byte // the current command line, partly handed over

	lineStart time.Time // when the first byte of the line in in[r:w] came
	lastFill  time.Time // when bytes last came

	mode       int
	dstate     int
	dDeadline  time.Time
	pipeAfter  string // improper pipelining seen after the end of a message
	wbuf       []byte // partial reply line written by go-smtp
	pend       []byte // reply lines not yet written (the rest of their reply is to come)
	ehloReply  bool   // go-smtp is writing the reply to EHLO
	eof        bool   // the guard ended the session: Read returns io.EOF
	closeOnce  sync.Once
	closeError error
}

func newGuardConn(c net.Conn, cs *connState) *guardConn {
	return &guardConn{c: c, raw: c, cs: cs, g: cs.g}
}

func (c *guardConn) LocalAddr() net.Addr             { return c.c.LocalAddr() }
func (c *guardConn) RemoteAddr() net.Addr            { return c.c.RemoteAddr() }
func (c *guardConn) SetDeadline(t time.Time) error   { return c.SetWriteDeadline(t) }
func (c *guardConn) SetReadDeadline(time.Time) error { return nil } // the filter owns read deadlines
func (c *guardConn) SetWriteDeadline(t time.Time) error {
	return c.c.SetWriteDeadline(c.writeDeadline(t))
}

// writeDeadline keeps go-smtp's write deadlines for a banned client short.
func (c *guardConn) writeDeadline(t time.Time) time.Time {
	if c.cs.banReason.Load() != nil {
		if short := time.Now().Add(banWriteGrace); t.IsZero() || t.After(short) {
			return short
		}
	}
	return t
}

// TLSConnectionState reports the STARTTLS state (done by the filter,
// below go-smtp).
func (c *guardConn) TLSConnectionState() (tls.ConnectionState, bool) {
	if tc, ok := c.c.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

func (c *guardConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeError = c.c.Close()
		c.g.mu.Lock()
		c.g.untrack(c)
		c.g.mu.Unlock()
		cs := c.cs
		if cs.sess != nil {
			cs.sess.closeUpstream()
		}
		c.g.release(cs.ip)
		c.g.emit(cs, event.Event{Kind: event.KindDisconnect, Stage: cs.stage,
			Detail: fmt.Sprintf("commands=%d errors=%d messages=%d", cs.commands, cs.errors, cs.messages)})
		cs.logVerdict()
	})
	return c.closeError
}

func (c *guardConn) Read(p []byte) (int, error) {
	if len(c.out) > 0 {
		n := copy(p, c.out)
		c.out = c.out[n:]
		return n, nil
	}
	if c.eof {
		return 0, io.EOF
	}
	if c.mode == modeData {
		return c.readData(p)
	}
	for {
		line, err := c.nextCommand()
		if err != nil {
			c.eof = true
			return 0, err
		}
		if line != nil {
			n := copy(p, line)
			c.out = line[n:]
			return n, nil
		}
	}
}

// fill reads more client bytes into in[w:] before deadline(stressed). A ban or
// a change of stress wakes a blocked read (wakePast); fill then returns
// errBanned, or reads on until the deadline as it is now (unless its
// stress deadline passed while stress lasted). deadline must be anchored
// (start of the wait + timeout), not relative to now.
func (c *guardConn) fill(deadline func(stressed bool) time.Time) error {
	if c.in == nil {
		c.in = make([]byte, max(4096, c.g.cfg.Limits.MaxLineLength+512))
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.w == len(c.in) {
		c.w = copy(c.in, c.in[c.r:c.w])
		c.r = 0
	}
	empty := c.r == c.w
	if err := c.flushReplies(); err != nil { // replies held for a command group
		return err
	}
	for {
		if c.cs.banReason.Load() != nil {
			return errBanned
		}
		gen := c.g.stressGen.Load()
		d := deadline(c.g.stressed())
		c.c.SetReadDeadline(d)
		// A wake-up between deadline() and here was overwritten: look again.
		if c.cs.banReason.Load() != nil || c.g.stressGen.Load() != gen {
			continue
		}
		n, err := c.c.Read(c.in[c.w:])
		c.w += n
		if n > 0 {
			c.lastFill = time.Now()
			if empty {
				c.lineStart = c.lastFill
			}
			return nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		if c.cs.banReason.Load() != nil {
			return errBanned
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !c.g.expiredUnderStress(deadline) &&
			time.Now().Before(deadline(c.g.stressed())) {
			continue // woken, or stress ended: not timed out by the timeouts now in force
		}
		return err
	}
}

// readLine returns the next line (with its line end). Its first byte
// must come within command_timeout, and the whole line within
// line_timeout of its first byte, however slowly it trickles in.
func (c *guardConn) readLine() ([]byte, error) {
	idleSince := time.Now()
	max := c.g.cfg.Limits.MaxLineLength
	deadline := func(stressed bool) time.Time {
		if c.r < c.w { // the line has begun
			return c.lineStart.Add(c.g.lineTimeoutIn(stressed))
		}
		return idleSince.Add(c.g.commandTimeoutIn(stressed))
	}
	for {
		if i := bytes.IndexByte(c.in[c.r:c.w], '\n'); i >= 0 {
			line := bytes.Clone(c.in[c.r : c.r+i+1])
			c.r += i + 1
			if c.r < c.w { // pipelined: the next line came with the last read at the latest
				c.lineStart = c.lastFill
			}
			if len(line) > max {
				return nil, errLineTooLong
			}
			return line, nil
		}
		if c.w-c.r >= max {
			return nil, errLineTooLong
		}
		if err := c.fill(deadline); err != nil {
			return nil, err
		}
	}
}

// reply writes a reply of the guard's own (not go-smtp's).
func (c *guardConn) reply(s string) error {
	code, _, _ := splitReply(s)
	// Replies held for a pipelined group go out before an error delay,
	// not after it.
	if len(c.pend) > 0 {
		c.c.SetWriteDeadline(c.writeDeadline(time.Now().Add(c.g.cfg.Limits.WriteTimeout.D())))
		if err := c.flushReplies(); err != nil {
			return err
		}
	}
	c.onReply(code)
	c.c.SetWriteDeadline(c.writeDeadline(time.Now().Add(c.g.cfg.Limits.WriteTimeout.D())))
	return c.writeReply(s)
}

func (c *guardConn) writeReply(s string) error {
	c.pend = append(append(c.pend, s...), "\r\n"...)
	return c.flushReplies()
}

// onReply counts an error reply and delays it once the client is past
// the soft error limit (the delay grows with each further error).
func (c *guardConn) onReply(code int) {
	if code < 400 {
		return
	}
	cs := c.cs
	if cs.noCount {
		// A greylisting deferral is expected of every new sender: an MTA
		// with many recipients must not reach the error limits with it.
		cs.noCount = false
		c.g.ctr.rejects.Add(1)
		return
	}
	cs.errors++
	c.g.ctr.rejects.Add(1)
	l := c.g.cfg.Limits
	sleep := c.g.errorSleep()
	if l.SoftErrorLimit > 0 && cs.errors > l.SoftErrorLimit && sleep > 0 && code != 421 {
		if cs.sess != nil {
			cs.sess.releaseUpstream()
		}
		d := sleep * time.Duration(cs.errors-l.SoftErrorLimit)
		d = min(d, 30*time.Second)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.g.done:
			t.Stop()
		case <-cs.banKill: // a banned client is dropped, not tarpitted
			t.Stop()
		}
	}
}

// closeWith writes a last reply and ends the session.
func (c *guardConn) closeWith(reply, verdict string) error {
	if c.cs.verdict == "" {
		c.cs.verdict = verdict
	}
	c.reply(reply)
	return io.EOF
}

var knownVerbs = map[string]bool{
	"HELO": true, "EHLO": true, "MAIL": true, "RCPT": true, "DATA": true, "RSET": true,
	"NOOP": true, "QUIT": true, "VRFY": true, "EXPN": true, "HELP": true, "AUTH": true, "STARTTLS": true,
}

var httpVerbs = map[string]bool{
	"GET": true, "POST": true, "CONNECT": true, "HEAD": true, "PUT": true, "OPTIONS": true, "DELETE": true,
}

// nextCommand reads and polices one command. It returns the line to hand
// to go-smtp, nil to read the next one (the guard answered itself), or an
// error to end the session.
func (c *guardConn) nextCommand() ([]byte, error) {
	cs, g := c.cs, c.g
	l := g.cfg.Limits
	if cs.banEnded {
		return nil, io.EOF // the 421 went out with go-smtp's last reply
	}
	if why, banned := c.banned(); banned {
		return nil, c.endBanned(why)
	}
	if l.HardErrorLimit > 0 && cs.errors >= l.HardErrorLimit {
		g.ctr.tooManyErrors.Add(1)
		g.emit(cs, event.Event{Kind: event.KindTooManyErrors, Stage: cs.stage, Abuse: true, Count: cs.errors,
			Raw: fmt.Sprintf("too many errors after %s from unknown[%s]", cs.stage, cs.ip)})
		return nil, c.closeWith("421 4.7.0 "+g.cfg.Hostname+" Error: too many errors", "too many errors after "+cs.stage)
	}
	if c.pipeAfter != "" {
		return nil, c.improperPipelining("END-OF-MESSAGE", c.pipeAfter)
	}
	if l.MaxCommands > 0 && cs.commands >= l.MaxCommands {
		g.emit(cs, event.Event{Kind: event.KindCommandLimit, Stage: cs.stage, Abuse: true, Count: cs.commands,
			Detail: "COMMAND COUNT LIMIT", Raw: fmt.Sprintf("COMMAND COUNT LIMIT from [%s]:%d after %s", cs.ip, cs.port, cs.stage)})
		return nil, c.closeWith("421 4.7.0 "+g.cfg.Hostname+" Error: too many commands", "command count limit")
	}
	line, err := c.readLine()
	if err != nil {
		return nil, c.readError(err)
	}
	cs.commands++
	text := strings.TrimRight(string(line), "\r\n")
	verb, arg, _ := strings.Cut(text, " ")
	verb = strings.ToUpper(verb)
	arg = strings.TrimSpace(arg)
	pipelined := c.r < c.w

	if text == "" {
		return nil, c.reply("500 5.5.2 Error: bad syntax")
	}
	if b := text[0]; !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z') || httpVerbs[verb] || strings.HasSuffix(verb, ":") {
		// smtpd_forbidden_commands = CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}
		g.ctr.nonSMTP.Add(1)
		g.emit(cs, event.Event{Kind: event.KindNonSMTP, Stage: cs.stage, Abuse: true, Detail: sanitize(text, 100),
			Raw: fmt.Sprintf("non-SMTP command from unknown[%s]: %s", cs.ip, sanitize(text, 100))})
		return nil, c.closeWith("221 2.7.0 Error: I can break rules, too. Goodbye.", "non-SMTP command")
	}
	if pipelined && (!cs.esmtp || verb == "EHLO" || verb == "HELO" || verb == "DATA" || verb == "STARTTLS") {
		// The verb is the client's: only a known one may name the stage.
		after := "UNKNOWN"
		if knownVerbs[verb] {
			after = verb
		}
		return nil, c.improperPipelining(after, string(c.in[c.r:c.w]))
	}
	if knownVerbs[verb] {
		cs.stage = verb
	} else {
		cs.stage = "UNKNOWN"
	}
	if cs.needHelo && verb != "HELO" && verb != "EHLO" && verb != "QUIT" && verb != "NOOP" && verb != "RSET" {
		return nil, c.reply("503 5.5.1 Error: send HELO/EHLO first")
	}

	switch verb {
	case "XCLIENT", "XFORWARD":
		// Only the guard may speak XCLIENT to the upstream.
		reply := "550 5.7.0 Error: insufficient authorization"
		g.reject(cs, verb, reply, event.ReasonOther, true)
		return nil, c.reply(reply)
	case "VRFY", "EXPN":
		if g.cfg.Checks.DisableVRFY {
			return nil, c.reply("502 5.5.1 " + verb + " command is disabled")
		}
	case "STARTTLS":
		if g.tlsConfig != nil && !cs.tls {
			return nil, c.startTLS()
		}
	case "HELO", "EHLO":
		if arg == "" {
			break // go-smtp answers 501
		}
		name, _, _ := strings.Cut(arg, " ")
		if rep := g.checkHelo(cs, verb, name); rep != "" {
			return nil, c.reply(rep)
		}
		cs.helo, cs.heloCmd, cs.needHelo, cs.esmtp = name, verb, false, false
		c.ehloReply = verb == "EHLO"
	case "MAIL":
		if cs.helo == "" && g.cfg.Checks.HeloRequired != Off {
			reply := "503 5.5.1 Error: send HELO/EHLO first"
			g.reject(cs, "MAIL", reply, event.ReasonOther, g.cfg.Checks.HeloRequired == Reject)
			return nil, c.reply(reply)
		}
	case "DATA":
		if cs.sess != nil {
			if rep := cs.sess.beforeData(); rep != "" {
				return nil, c.reply(rep)
			}
		}
	default:
		if !knownVerbs[verb] {
			return nil, c.reply("502 5.5.2 Error: command not recognized")
		}
	}
	return line, nil
}

func (c *guardConn) improperPipelining(after, rest string) error {
	cs, g := c.cs, c.g
	g.ctr.pipelining.Add(1)
	detail := sanitize(rest, 100)
	g.emit(cs, event.Event{Kind: event.KindPipelining, Stage: after, Abuse: true, Detail: detail,
		Raw: fmt.Sprintf("improper command pipelining after %s from unknown[%s]: %s", after, cs.ip, detail)})
	return c.closeWith("554 5.5.0 Error: SMTP protocol synchronization", "improper pipelining after "+after)
}

// readError turns a failed command read into the session's end.
func (c *guardConn) readError(err error) error {
	cs, g := c.cs, c.g
	var ne net.Error
	switch {
	case errors.Is(err, errBanned):
		why, _ := c.banned()
		return c.endBanned(why)
	case errors.Is(err, errLineTooLong):
		g.emit(cs, event.Event{Kind: event.KindCommandLimit, Stage: cs.stage, Abuse: true,
			Detail: "COMMAND LENGTH LIMIT", Raw: fmt.Sprintf("COMMAND LENGTH LIMIT from [%s]:%d after %s", cs.ip, cs.port, cs.stage)})
		return c.closeWith("500 5.5.0 Error: line too long", "command length limit")
	case errors.As(err, &ne) && ne.Timeout():
		g.ctr.timeouts.Add(1)
		if c.r < c.w {
			g.ctr.lineTimeouts.Add(1)
		}
		g.emit(cs, event.Event{Kind: event.KindTimeout, Stage: cs.stage, Abuse: !event.AfterData(cs.stage),
			Raw: fmt.Sprintf("timeout after %s from unknown[%s]", cs.stage, cs.ip)})
		return c.closeWith("421 4.4.2 "+g.cfg.Hostname+" Error: timeout exceeded", "timeout after "+cs.stage)
	case cs.stage == "QUIT":
		return io.EOF // the client said goodbye and hung up: nothing lost
	default:
		if cs.verdict == "" {
			cs.verdict = "lost connection after " + cs.stage
		}
		g.emit(cs, event.Event{Kind: event.KindLostConnection, Stage: cs.stage,
			Abuse: !event.AfterData(cs.stage) && cs.stage != "CONNECT",
			Raw:   fmt.Sprintf("lost connection after %s from unknown[%s]", cs.stage, cs.ip)})
		return io.EOF
	}
}

// startTLS runs the STARTTLS handshake below go-smtp, so the filter keeps
// seeing plain text. The client must say HELO/EHLO again (RFC 3207).
func (c *guardConn) startTLS() error {
	if err := c.reply("220 2.0.0 Ready to start TLS"); err != nil {
		return err
	}
	tc := tls.Server(c.c, c.g.tlsConfig)
	tc.SetDeadline(time.Now().Add(c.g.commandTimeout()))
	if err := tc.Handshake(); err != nil {
		c.cs.verdict = "TLS handshake failed"
		c.g.log.Debug("guard: TLS handshake", "ip", c.cs.ip.String(), "err", err)
		return io.EOF
	}
	tc.SetDeadline(time.Time{})
	c.c = tc
	c.r, c.w = 0, 0
	c.cs.tls, c.cs.needHelo, c.cs.esmtp = true, true, false
	return nil
}

// readData hands message bytes to go-smtp up to and including the end
// marker, then returns to command mode.
func (c *guardConn) readData(p []byte) (int, error) {
	if c.cs.banReason.Load() != nil {
		// Nothing more of the message: the session's Data aborts the
		// upstream without the final dot and answers 421.
		c.eof = true
		return 0, errBanned
	}
	if c.r == c.w {
		if err := c.fill(c.dataDeadline()); err != nil {
			var ne net.Error
			if errors.Is(err, errBanned) {
				c.eof = true
				return 0, err
			}
			if errors.As(err, &ne) && ne.Timeout() {
				c.g.ctr.timeouts.Add(1)
				c.cs.verdict = "timeout after DATA"
				c.g.emit(c.cs, event.Event{Kind: event.KindTimeout, Stage: "DATA",
					Raw: fmt.Sprintf("timeout after DATA from unknown[%s]", c.cs.ip)})
			} else {
				c.cs.verdict = "lost connection after DATA"
				c.g.emit(c.cs, event.Event{Kind: event.KindLostConnection, Stage: "DATA",
					Raw: fmt.Sprintf("lost connection after DATA from unknown[%s]", c.cs.ip)})
			}
			c.eof = true
			return 0, err
		}
	}
	n := 0
	st := c.dstate
	for n < len(p) && c.r < c.w && st != stEOF {
		b := c.in[c.r]
		switch st {
		case stBeginLine:
			switch b {
			case '.':
				st = stDot
			case '\r':
				st = stCR
			default:
				st = stData
			}
		case stDot:
			if b == '\r' {
				st = stDotCR
			} else {
				st = stData
			}
		case stDotCR:
			if b == '\n' {
				st = stEOF
			} else {
				st = stData
			}
		case stCR:
			if b == '\n' {
				st = stBeginLine
			} else if b != '\r' {
				st = stData
			}
		case stData:
			if b == '\r' {
				st = stCR
			}
		}
		p[n] = b
		n++
		c.r++
	}
	c.dstate = st
	if st == stEOF {
		c.endData()
	}
	return n, nil
}

// dataDeadline bounds the wait for more message bytes: idle_timeout from
// now, within data_timeout of the 354.
func (c *guardConn) dataDeadline() func(stressed bool) time.Time {
	idleSince := time.Now()
	return func(stressed bool) time.Time {
		if d := idleSince.Add(c.g.idleTimeoutIn(stressed)); d.Before(c.dDeadline) {
			return d
		}
		return c.dDeadline
	}
}

// endData returns to command mode after the end of a message. Bytes
// already read after it were sent before its reply: improper pipelining
// unless PIPELINING was offered.
func (c *guardConn) endData() {
	c.mode = modeCommand
	c.cs.stage = "END-OF-MESSAGE"
	if c.r < c.w && !c.cs.esmtp {
		c.pipeAfter = string(c.in[c.r:c.w])
	}
}

// Write receives go-smtp's replies line by line: it edits the EHLO
// reply, enters DATA mode after 354, counts and delays error replies.
// go-smtp flushes every line; the lines of one reply go to the client in
// one write, when its last line is done.
func (c *guardConn) Write(p []byte) (int, error) {
	c.wbuf = append(c.wbuf, p...)
	done := 0
	for {
		i := bytes.IndexByte(c.wbuf[done:], '\n')
		if i < 0 {
			break
		}
		line := c.wbuf[done : done+i+1]
		done += i + 1
		c.pend = c.editReply(c.pend, line)
		if (len(line) < 4 || line[3] != '-') && !c.holdReplies(line) || len(c.pend) >= 4096 {
			if err := c.flushReplies(); err != nil {
				return 0, err
			}
		}
	}
	c.wbuf = c.wbuf[:copy(c.wbuf, c.wbuf[done:])]
	return len(p), nil
}

// holdReplies reports whether the replies so far may wait for the next
// one: the client pipelined (its next command is already read), so, as
// Postfix does, the replies to a command group go out in one write, at
// the latest when the guard waits for the client again (fill). A reply
// that ends the session (221, 421) goes out at once with those before it.
func (c *guardConn) holdReplies(final []byte) bool {
	if bytes.HasPrefix(final, []byte("221")) || bytes.HasPrefix(final, []byte("421")) {
		return false
	}
	return c.mode == modeCommand && c.r < c.w && c.cs.esmtp && !c.eof
}

// flushReplies writes the reply lines held back so far.
func (c *guardConn) flushReplies() error {
	if len(c.pend) == 0 {
		return nil
	}
	_, err := c.c.Write(c.pend)
	c.pend = c.pend[:0]
	return err
}

func (c *guardConn) editReply(out, line []byte) []byte {
	if len(line) < 4 {
		return append(out, line...)
	}
	code, _, _ := splitReply(string(line[:3]))
	final := line[3] != '-'
	if c.ehloReply {
		if code == 250 && !final {
			switch strings.TrimRight(string(line[4:]), "\r\n") {
			case "CHUNKING", "STARTTLS":
				// BDAT is not relayed (the filter needs lines); STARTTLS
				// is done by the filter and advertised below.
				return out
			}
		}
		if final {
			c.ehloReply = false
			if code == 250 {
				if c.g.tlsConfig != nil && !c.cs.tls {
					out = append(out, "250-STARTTLS\r\n"...)
				}
				c.cs.esmtp = true
			}
		}
	}
	if final {
		switch {
		case code == 354:
			c.mode, c.dstate = modeData, stBeginLine
			c.dDeadline = time.Now().Add(c.g.cfg.Limits.DataTimeout.D())
			c.cs.stage = "DATA"
		case code == 250 && c.cs.stage == "END-OF-MESSAGE":
			c.cs.errors = 0 // like Postfix: errors are forgiven after a delivered message
		}
		if code >= 400 && len(out) > 0 {
			// flush what came before, then delay this reply
			c.c.Write(out)
			out = out[:0]
		}
		c.onReply(code)
	}
	return append(out, line...)
}
