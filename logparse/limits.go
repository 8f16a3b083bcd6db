package logparse

import (
	"net/netip"
	"strings"

	"github.com/mxguard/mxguard/internal/event"
)

// anvilLimits are smtpd's warnings when a client exceeds an anvil limit
// (smtpd.c: "%s limit exceeded: %d from %s for service %s"), with the
// event.Limit* value each one reports and the stage smtpd was at.
var anvilLimits = [...]struct{ prefix, limit, stage string }{
	{"Connection rate limit exceeded: ", event.LimitConnectionRate, "CONNECT"},
	{"Connection concurrency limit exceeded: ", event.LimitConnectionCount, "CONNECT"},
	{"Message delivery request rate limit exceeded: ", event.LimitMessageRate, "MAIL"},
	{"Recipient address rate limit exceeded: ", event.LimitRecipientRate, "RCPT"},
	{"New TLS session rate limit exceeded: ", event.LimitNewTLSRate, "STARTTLS"},
}

// parseRateLimit reads "N from CLIENT for service SERVICE" after one of
// the anvilLimits prefixes. ok is false when w starts with none of them.
func parseRateLimit(w string, ev *event.Event) (matched bool, err error) {
	for _, l := range anvilLimits {
		rest, ok := strings.CutPrefix(w, l.prefix)
		if !ok {
			continue
		}
		n, rest, _ := strings.Cut(rest, " ")
		count, ok := atoi(n)
		if !ok || !strings.HasPrefix(rest, "from ") {
			return true, ErrUnrecognized
		}
		rest, ok = cutClient(rest[5:], ev)
		if !ok || !strings.HasPrefix(rest, " for service ") {
			return true, ErrUnrecognized
		}
		ev.Kind, ev.Detail, ev.Count, ev.Stage, ev.Abuse = event.KindRateLimit, l.limit, count, l.stage, true
		return true, nil
	}
	return false, nil
}

// parseSSLAccept reads tls_server.c's "SSL_accept error from CLIENT: X"
// (X: the return code, "lost connection" or an errno text). A handshake
// that fails is evidence: a scanner or a broken bot; the library's own
// reason follows in a "TLS library problem" warning.
func parseSSLAccept(msg string, ev *event.Event) error {
	rest, ok := cutClient(msg[len("SSL_accept error from "):], ev)
	if !ok || !strings.HasPrefix(rest, ": ") {
		return ErrUnrecognized
	}
	ev.Kind, ev.Stage, ev.Detail, ev.Abuse = event.KindTLSError, "STARTTLS", rest[2:], true
	return nil
}

// parseTLSProblem reads "TLS library problem: TEXT" (tls_misc.c), which
// names no client: the smtpd process's current client is taken from the
// Parser's session table. It is not evidence by itself: the "SSL_accept
// error" line of the same handshake already is.
func (p *Parser) parseTLSProblem(text string, h *header, ev *event.Event) {
	ev.Kind, ev.Stage, ev.Detail = event.KindTLSError, "STARTTLS", text
	if h.daemon != "smtpd" {
		return // tlsproxy serves many clients in one process
	}
	if s := p.sessions.find(h); s != nil {
		ev.Client, ev.Port = s.addr, int(s.port)
	}
}

// isTLSSummary reports tls_misc.c's summary of a handshake: "Anonymous
// TLS connection established from ...", also Untrusted, Trusted,
// Verified and "reused".
func isTLSSummary(msg string) bool {
	i := strings.IndexByte(msg, ' ')
	if i < 0 {
		return false
	}
	switch msg[:i] {
	case "Anonymous", "Untrusted", "Trusted", "Verified":
	default:
		return false
	}
	r := msg[i:]
	return strings.HasPrefix(r, " TLS connection established from ") || strings.HasPrefix(r, " TLS connection reused from ")
}

// isContext reports a line of a known daemon that says something about
// the mail system, not about an SMTP client: it is recognised, yet no
// event. Checked only after the daemon's own parser gave up, so the
// common lines pay nothing for it.
func isContext(h *header) bool {
	msg := h.msg
	switch h.daemon {
	case "master", "postfix-script", "anvil", "scache":
		// start, stop, reload, process exits; anvil's and scache's
		// statistics
		return true
	case "smtpd":
		if isTLSSummary(msg) {
			return true
		}
	case "tlsproxy":
		return strings.HasPrefix(msg, "CONNECT from ") || strings.HasPrefix(msg, "DISCONNECT ") || isTLSSummary(msg)
	}
	switch {
	case strings.HasPrefix(msg, "table "):
		// "table hash:/etc/postfix/x(0,lock|fold_fix) has changed -- restarting"
		return strings.HasSuffix(msg, " has changed -- restarting")
	case strings.HasPrefix(msg, "cache "):
		// postscreen's and verify's "cache btree:/path full cleanup:
		// retained=N dropped=M entries" (dict_cache.c)
		return strings.Contains(msg, " cleanup: retained=")
	}
	return false
}

// sessionSlots bounds the session table: one entry per smtpd process,
// direct-mapped by pid. A collision forgets the older process's client,
// so a TLS problem is then left without a client, never given a wrong one.
const sessionSlots = 1024

// session is the client an smtpd process is serving.
type session struct {
	pid      int
	origin   uint64 // hash of host and program, so two hosts' pids differ
	instance uint64 // hash of host and Postfix instance, for master's lines
	addr     netip.Addr
	port     uint16
}

// sessions maps smtpd processes to their current client, for the lines
// that name none ("warning: TLS library problem"). Its memory is fixed.
type sessions struct {
	slots *[sessionSlots]session
}

func origin(h *header) uint64 { return hashNames(h.host, h.program) }

// instanceOf is the hash of h's host and Postfix instance: the first
// component of its program ("postfix" of "postfix/submission/smtpd",
// "postfix-out" of "postfix-out/master"), which master(8) and the smtpd
// processes it runs share.
func instanceOf(h *header) uint64 {
	inst := h.program
	if i := strings.IndexByte(inst, '/'); i >= 0 {
		inst = inst[:i]
	}
	return hashNames(h.host, inst)
}

// hashNames is FNV-1a of a and b, each followed by a separator byte.
func hashNames(a, b string) uint64 {
	x := uint64(14695981039346656037)
	for _, s := range [2]string{a, b} {
		for i := 0; i < len(s); i++ {
			x ^= uint64(s[i])
			x *= 1099511628211
		}
		x ^= 0xff
		x *= 1099511628211
	}
	return x
}

// ForgetSessions forgets which client each smtpd process serves. Call it
// when the next line does not follow the last one parsed (a parallel
// reader's next chunk), so that a TLS problem is left without a client
// rather than given the client of an earlier session of the same pid.
func (p *Parser) ForgetSessions() {
	if p.sessions.slots != nil {
		clear(p.sessions.slots[:])
	}
}

// masterLine forgets the client of an smtpd process that master(8)
// reports dead ("warning: process /usr/libexec/postfix/smtpd pid 4242 exit
// status 1", "... killed by signal 9"), and every client of its host and
// instance when master starts ("daemon started -- version 3.8.6, ..."):
// such a process logged no "disconnect from", and its pid's slot must not
// lend the old client to a later process with the same pid. Another
// host's or instance's processes are not master's.
func (p *Parser) masterLine(h *header) {
	msg := h.msg
	if strings.HasPrefix(msg, "daemon started") {
		p.sessions.clearInstance(instanceOf(h))
		return
	}
	rest, ok := strings.CutPrefix(msg, "warning: process ")
	if !ok {
		return
	}
	_, rest, ok = strings.Cut(rest, " pid ")
	if !ok {
		return
	}
	n, rest, _ := strings.Cut(rest, " ")
	if !strings.HasPrefix(rest, "exit status ") && !strings.HasPrefix(rest, "killed by signal ") {
		return
	}
	if pid, ok := atoi(n); ok {
		p.sessions.clearPID(pid, instanceOf(h))
	}
}

// clearPID forgets the client of process pid of an instance.
func (t *sessions) clearPID(pid int, instance uint64) {
	if t.slots == nil || pid <= 0 {
		return
	}
	if s := &t.slots[pid%sessionSlots]; s.pid == pid && s.instance == instance {
		*s = session{}
	}
}

// clearInstance forgets the clients of every process of an instance.
func (t *sessions) clearInstance(instance uint64) {
	if t.slots == nil {
		return
	}
	for i := range t.slots {
		if t.slots[i].instance == instance {
			t.slots[i] = session{}
		}
	}
}

// set records that h's process now serves ev's client.
func (t *sessions) set(h *header, ev *event.Event) {
	if h.pid <= 0 || !ev.Client.IsValid() {
		return
	}
	if t.slots == nil {
		t.slots = new([sessionSlots]session)
	}
	t.slots[h.pid%sessionSlots] = session{pid: h.pid, origin: origin(h), instance: instanceOf(h), addr: ev.Client, port: uint16(ev.Port)}
}

// clear forgets h's process's client (its session ended). The origin is
// not compared: forgetting another host's process with the same pid loses
// an attribution, never makes a wrong one, and saves the hash.
func (t *sessions) clear(h *header) {
	if t.slots != nil && h.pid > 0 && t.slots[h.pid%sessionSlots].pid == h.pid {
		t.slots[h.pid%sessionSlots] = session{}
	}
}

func (t *sessions) find(h *header) *session {
	if t.slots == nil || h.pid <= 0 {
		return nil
	}
	s := &t.slots[h.pid%sessionSlots]
	if s.pid != h.pid || s.origin != origin(h) {
		return nil
	}
	return s
}
