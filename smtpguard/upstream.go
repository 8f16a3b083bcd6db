package smtpguard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// upstream is the guard's SMTP client session to the upstream MTA. It
// sends one command at a time and never pipelines.
type upstream struct {
	c           net.Conn
	r           *bufio.Reader
	w           *bufio.Writer
	text        []byte // the reply being read (reused: one string per reply)
	long        []byte // a reply line longer than r's buffer
	timeout     time.Duration
	dataTimeout time.Duration
	born        time.Time // connected at (for the pool's idle limit)
	pipelining  bool      // the upstream offered PIPELINING to the client's EHLO
}

// errUpstream is the answer when the upstream cannot be reached or
// breaks: a temporary failure, never an acceptance.
var errUpstream = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1},
	Message: "Error: upstream mail server unavailable, try again later"}

// upstreamReply is a non-2xx/3xx answer of the upstream, relayed as is.
type upstreamReply struct {
	code int
	msg  string // without the code; may contain "\n" for multi-line replies
}

func (r *upstreamReply) Error() string { return fmt.Sprintf("%d %s", r.code, r.msg) }

// smtpError turns the reply into the *smtp.SMTPError go-smtp sends back.
func (r *upstreamReply) smtpError() *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.code, Message: r.msg}
	if f, rest, ok := strings.Cut(r.msg, " "); ok {
		var a, b, c int
		if n, _ := fmt.Sscanf(f, "%d.%d.%d", &a, &b, &c); n == 3 && a == r.code/100 {
			e.EnhancedCode, e.Message = smtp.EnhancedCode{a, b, c}, rest
		}
	}
	return e
}

// text is "CODE msg" on one line (for events and logs).
func (r *upstreamReply) text() string {
	return fmt.Sprintf("%d %s", r.code, strings.ReplaceAll(r.msg, "\n", " "))
}

// dialUpstream connects and introduces the client: XCLIENT right after
// the greeting (then EHLO with the client's HELO name), or a PROXY v1
// header.
func dialUpstream(cfg *Config, cs *connState, local net.Addr) (*upstream, error) {
	u, err := connectUpstream(cfg)
	if err != nil {
		return nil, err
	}
	if err := u.introduce(cfg, cs, local); err != nil {
		u.c.Close()
		return nil, err
	}
	return u, nil
}

// connectUpstream connects and, for XCLIENT, reads the greeting. Nothing
// about any client is sent: that is introduce's job (a PROXY header must
// be the first bytes, so with handoff proxy this only connects).
func connectUpstream(cfg *Config) (*upstream, error) {
	to := cfg.Limits.UpstreamTimeout.D()
	// No TCP keepalive: the upstream is near, and every read has a
	// deadline (saves four setsockopt calls per session).
	c, err := (&net.Dialer{Timeout: to, KeepAlive: -1}).Dial("tcp", cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Upstream, err)
	}
	// Small buffers: replies and commands are short, and the message
	// goes to c directly (relayMessage).
	u := &upstream{c: c, r: bufio.NewReaderSize(c, 1024), w: bufio.NewWriterSize(c, 1024),
		timeout: to, dataTimeout: cfg.Limits.UpstreamDataTimeout.D(), born: time.Now()}
	if cfg.Handoff == HandoffProxy {
		return u, nil
	}
	if _, err := u.expect(220, ""); err != nil {
		c.Close()
		return nil, fmt.Errorf("upstream greeting: %w", err)
	}
	return u, nil
}

// introduce tells the upstream who the client is (on a connection from
// connectUpstream) and repeats the client's HELO/EHLO.
func (u *upstream) introduce(cfg *Config, cs *connState, local net.Addr) error {
	helo := cs.helo
	if helo == "" {
		helo = "[" + cs.ip.String() + "]"
	}
	greet := cs.heloCmd
	if greet == "" {
		greet = "EHLO"
	}
	if cfg.Handoff == HandoffProxy {
		u.c.SetDeadline(time.Now().Add(u.timeout))
		if _, err := io.WriteString(u.c, proxyHeader(cs.ip, cs.port, local)); err != nil {
			return fmt.Errorf("upstream: PROXY header: %w", err)
		}
		if _, err := u.expect(220, ""); err != nil {
			return fmt.Errorf("upstream greeting: %w", err)
		}
		ext, err := u.expect(250, greet+" "+helo)
		if err != nil {
			return fmt.Errorf("upstream %s: %w", greet, err)
		}
		u.pipelining = greet == "EHLO" && hasExtension(ext, "PIPELINING")
		return nil
	}
	addr := cs.ip.String()
	if cs.ip.Is6() {
		addr = "IPV6:" + addr
	}
	proto := "ESMTP"
	if greet == "HELO" {
		proto = "SMTP"
	}
	// XCLIENT comes right after the greeting (Postfix takes it at any
	// time outside a transaction: no EHLO of the guard's own first, one
	// round trip less). XCLIENT and the next EHLO go in separate writes:
	// Postfix logs a pipelined EHLO after XCLIENT as improper pipelining.
	name := "[UNAVAILABLE]"
	if r, ok := cs.clientName(); ok {
		switch {
		case r.name != "":
			name = xtext(r.name) // forward-confirmed (Checks.FCrDNS)
		case r.err != nil && !errors.Is(r.err, ErrNotFound):
			// our DNS trouble: Postfix treats [UNAVAILABLE] as permanent
			// (reject_unknown_client_hostname may 5xx), [TEMPUNAVAIL] not
			name = "[TEMPUNAVAIL]"
		}
	}
	x := "XCLIENT ADDR=" + addr + " PORT=" + strconv.Itoa(cs.port) + " NAME=" + name + " HELO=" + xtext(helo) + " PROTO=" + proto
	if _, err := u.expect(220, x); err != nil {
		// Postfix answers 550 (insufficient authorization) to hosts not
		// in smtpd_authorized_xclient_hosts, and 502 where XCLIENT is
		// not offered; other refusals (501 Bad HELO syntax) are the
		// client's.
		if r := (*upstreamReply)(nil); errors.As(err, &r) && (r.code == 550 || r.code == 502 || r.code == 500) {
			return fmt.Errorf("upstream refused XCLIENT (set smtpd_authorized_xclient_hosts to the guard's address): %w", err)
		}
		return fmt.Errorf("upstream XCLIENT: %w", err)
	}
	ext, err := u.expect(250, greet+" "+helo)
	if err != nil {
		return fmt.Errorf("upstream %s after XCLIENT: %w", greet, err)
	}
	u.pipelining = greet == "EHLO" && hasExtension(ext, "PIPELINING")
	return nil
}

func proxyHeader(ip netip.Addr, port int, local net.Addr) string {
	dst, dport := addrOf(local)
	fam := "TCP4"
	if ip.Is6() || dst.Is6() {
		fam = "TCP6"
		if ip.Is4() {
			ip = netip.AddrFrom16(ip.As16())
		}
		if dst.Is4() {
			dst = netip.AddrFrom16(dst.As16())
		}
	}
	return fmt.Sprintf("PROXY %s %s %s %d %d\r\n", fam, ip, dst, port, dport)
}

func hasExtension(ehlo, ext string) bool {
	for rest := ehlo; rest != ""; {
		var l string
		l, rest, _ = strings.Cut(rest, "\n")
		if f, _, _ := strings.Cut(l, " "); strings.EqualFold(f, ext) {
			return true
		}
	}
	return false
}

// xtext encodes an XCLIENT attribute value (RFC 3461 xtext).
func xtext(s string) string {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		plain = s[i] >= 33 && s[i] <= 126 && s[i] != '+' && s[i] != '='
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 33 || c > 126 || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// expect sends line (if any) and reads the reply. A reply with another
// code is an *upstreamReply; I/O failures are other errors.
func (u *upstream) expect(code int, line string) (string, error) {
	u.c.SetDeadline(time.Now().Add(u.timeout))
	if line != "" {
		u.w.WriteString(line)
		u.w.WriteString("\r\n")
		if err := u.w.Flush(); err != nil {
			return "", err
		}
	}
	return u.read(code)
}

// send writes the lines in one write (an RFC 2920 command group) and
// reads nothing.
func (u *upstream) send(lines ...string) error {
	u.c.SetDeadline(time.Now().Add(u.timeout))
	for _, l := range lines {
		u.w.WriteString(l)
		u.w.WriteString("\r\n")
	}
	return u.w.Flush()
}

func (u *upstream) read(code int) (string, error) {
	got, msg, err := u.readReply()
	if err != nil {
		return "", err
	}
	if got != code {
		return msg, &upstreamReply{code: got, msg: msg}
	}
	return msg, nil
}

// maxReplyLine bounds an upstream reply line (RFC 5321: 512 octets), and
// maxReplyTotal a whole reply, however many continuation lines it has.
const (
	maxReplyLine  = 4096
	maxReplyTotal = 64 << 10
)

// readReply reads one reply: lines "NNN-text" and a last "NNN text" (or
// a bare "NNN"), all with the same code. The text is the lines' texts
// joined by "\n".
func (u *upstream) readReply() (code int, text string, err error) {
	u.text = u.text[:0]
	for first := true; ; first = false {
		line, err := u.readLine()
		if err != nil {
			return 0, "", err
		}
		if len(line) < 3 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) ||
			len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return 0, "", fmt.Errorf("upstream: malformed reply line %q", sanitize(string(line), 100))
		}
		c := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		if !first && c != code {
			return 0, "", fmt.Errorf("upstream: reply lines with codes %d and %d", code, c)
		}
		code = c
		if !first {
			u.text = append(u.text, '\n')
		}
		if len(line) > 4 {
			if len(u.text)+len(line) > maxReplyTotal {
				return 0, "", fmt.Errorf("upstream: reply longer than %d bytes", maxReplyTotal)
			}
			u.text = append(u.text, line[4:]...)
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, string(u.text), nil
		}
	}
}

// readLine returns the next line without its line end; the slice is
// valid until the next read.
func (u *upstream) readLine() ([]byte, error) {
	line, err := u.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		u.long = append(u.long[:0], line...)
		for err == bufio.ErrBufferFull && len(u.long) <= maxReplyLine {
			line, err = u.r.ReadSlice('\n')
			u.long = append(u.long, line...)
		}
		if err == nil && len(u.long) > maxReplyLine {
			err = errors.New("upstream: reply line too long")
		}
		line = u.long
	}
	if err != nil {
		if err == bufio.ErrBufferFull {
			err = errors.New("upstream: reply line too long")
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// data sends DATA and waits for 354.
func (u *upstream) data() error {
	_, err := u.expect(354, "DATA")
	return err
}

// relayMessage relays the client's message from gc as it comes (see
// dataRelay) and reads the final reply. A readErr leaves the transaction
// broken: the caller must close the upstream so that nothing partial is
// delivered.
func (u *upstream) relayMessage(gc *guardConn, maxBytes int64) (reply string, readErr, err error) {
	u.c.SetDeadline(time.Now().Add(u.dataTimeout))
	if readErr, err = gc.relayData(u.c, maxBytes); readErr != nil || err != nil {
		return "", readErr, err
	}
	msg, err := u.read(250)
	return msg, nil, err
}

// close ends the session with QUIT without waiting for the 221: the
// upstream reads QUIT before it sees the connection closed (Postfix logs
// quit=1), and nothing in the reply matters.
func (u *upstream) close() {
	if u == nil {
		return
	}
	u.c.SetDeadline(time.Now().Add(min(u.timeout, 5*time.Second)))
	u.w.WriteString("QUIT\r\n")
	u.w.Flush()
	u.c.Close()
}

// abort drops the connection without QUIT (a half-sent message must not
// be delivered).
func (u *upstream) abort() {
	if u != nil {
		u.c.Close()
	}
}
