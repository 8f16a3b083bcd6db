package smtpguard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
)

// fakeUpstream is a minimal SMTP server standing in for Postfix: it
// offers and accepts XCLIENT (or reads a PROXY header), knows a few
// users (others get 550 5.1.1) and records what it received.
type fakeUpstream struct {
	l     net.Listener
	users map[string]bool
	proxy atomic.Bool

	mu       sync.Mutex
	msgs     []fakeMsg
	xclients []string
	proxies  []string
	conns    int
	lines    []string        // every command line received
	grouped  []string        // command lines that arrived with more bytes behind them (pipelined)
	refuse   map[string]bool // senders refused at MAIL (553); set before use
}

type fakeMsg struct {
	xclient, helo, from string
	to                  []string
	data                string
}

func newFakeUpstream(t testing.TB, proxy bool) *fakeUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUpstream{l: l, users: map[string]bool{"alice@example.com": true, "bob@example.com": true}}
	f.proxy.Store(proxy)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	return f
}

func (f *fakeUpstream) addr() string { return f.l.Addr().String() }

func (f *fakeUpstream) messages() []fakeMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeMsg(nil), f.msgs...)
}

func (f *fakeUpstream) connCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

func (f *fakeUpstream) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	f.mu.Lock()
	f.conns++
	f.mu.Unlock()
	say := func(s string) { io.WriteString(c, s+"\r\n") }
	if f.proxy.Load() {
		l, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, "PROXY ") {
			say("421 4.3.0 bad PROXY header")
			return
		}
		f.mu.Lock()
		f.proxies = append(f.proxies, strings.TrimSpace(l))
		f.mu.Unlock()
	}
	say("220 fake.upstream ESMTP")
	var m fakeMsg
	inMail := false
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		f.mu.Lock()
		f.lines = append(f.lines, l)
		if r.Buffered() > 0 {
			f.grouped = append(f.grouped, l)
		}
		f.mu.Unlock()
		verb, arg, _ := strings.Cut(l, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			m.helo = arg
			say("250-fake.upstream\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN\r\n250 8BITMIME")
		case "HELO":
			m.helo = arg
			say("250 fake.upstream")
		case "XCLIENT":
			m.xclient = arg
			f.mu.Lock()
			f.xclients = append(f.xclients, arg)
			f.mu.Unlock()
			say("220 fake.upstream ESMTP")
		case "MAIL":
			m.from = strings.TrimSuffix(strings.TrimPrefix(strings.Fields(arg)[0], "FROM:<"), ">")
			m.to = nil
			if f.refuse[m.from] {
				inMail = false
				say("553 5.7.1 <" + strings.Fields(arg)[0][6:] + ": Sender address rejected: Access denied")
				continue
			}
			inMail = true
			say("250 2.1.0 Ok")
		case "RCPT":
			to := strings.TrimSuffix(strings.TrimPrefix(arg, "TO:<"), ">")
			if !inMail {
				say("503 5.5.1 Error: need MAIL command")
				continue
			}
			if !f.users[strings.ToLower(to)] {
				// Postfix quotes the address unquoted (its internal form)
				say("550 5.1.1 <" + postfixInternal(to) + ">: Recipient address rejected: User unknown in virtual mailbox table")
				continue
			}
			m.to = append(m.to, to)
			say("250 2.1.5 Ok")
		case "DATA":
			say("354 End data with <CR><LF>.<CR><LF>")
			var b strings.Builder
			for {
				dl, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if dl == ".\r\n" {
					break
				}
				dl = strings.TrimPrefix(dl, ".") // undo dot-stuffing
				b.WriteString(dl)
			}
			m.data = b.String()
			f.mu.Lock()
			f.msgs = append(f.msgs, m)
			f.mu.Unlock()
			inMail = false
			say("250 2.0.0 Ok: queued as FAKE" + strconv.Itoa(len(f.msgs)))
		case "RSET":
			inMail = false
			say("250 2.0.0 Ok")
		case "QUIT":
			say("221 2.0.0 Bye")
			return
		default:
			say("502 5.5.2 Error: command not recognized")
		}
	}
}

// memBlocklist bans what the detectors decide. With onBan set it tells
// of each new ban, as ban.Manager.OnBan does.
type memBlocklist struct {
	mu    sync.Mutex
	bans  map[netip.Prefix]string
	onBan func(netip.Prefix, string)
}

func (b *memBlocklist) Banned(a netip.Addr) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p, why := range b.bans {
		if p.Contains(a) {
			return why, true
		}
	}
	return "", false
}

func (b *memBlocklist) ban(d detectors.Decision) {
	b.banPrefix(d.Prefix, d.Detector+": "+d.Reason)
}

func (b *memBlocklist) banPrefix(p netip.Prefix, why string) {
	b.mu.Lock()
	if b.bans == nil {
		b.bans = map[netip.Prefix]string{}
	}
	b.bans[p] = why
	notify := b.onBan
	b.mu.Unlock()
	if notify != nil {
		notify(p, why)
	}
}

// eventLog records events and feeds them to the real detectors engine.
type eventLog struct {
	mu        sync.Mutex
	events    []event.Event
	decisions []detectors.Decision
	eng       *detectors.Engine
	bl        *memBlocklist
}

func (e *eventLog) sink(ev event.Event) {
	ds := e.eng.Observe(ev)
	e.mu.Lock()
	e.events = append(e.events, ev)
	e.decisions = append(e.decisions, ds...)
	e.mu.Unlock()
	for _, d := range ds {
		if !d.Warn {
			e.bl.ban(d)
		}
	}
}

func (e *eventLog) all() []event.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]event.Event(nil), e.events...)
}

// find waits a little for an event of kind k (and reason r, if not none).
func (e *eventLog) find(t testing.TB, k event.Kind, r event.Reason) event.Event {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range e.all() {
			if ev.Kind == k && (r == event.ReasonNone || ev.Reason == r) {
				return ev
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s/%s event; got %s", k, r, e.summary())
	return event.Event{}
}

func (e *eventLog) has(k event.Kind) bool {
	for _, ev := range e.all() {
		if ev.Kind == k {
			return true
		}
	}
	return false
}

func (e *eventLog) summary() string {
	var b strings.Builder
	for _, ev := range e.all() {
		fmt.Fprintf(&b, "\n  %s %s %s %d %s abuse=%v", ev.Kind, ev.Stage, ev.Reason, ev.Code, ev.Detail, ev.Abuse)
	}
	return b.String()
}

type harness struct {
	g    *Guard
	addr string
	up   *fakeUpstream
	ev   *eventLog
	bl   *memBlocklist
}

func testConfig(upstream string) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Upstream = upstream
	cfg.Hostname = "guard.test"
	cfg.GreetPause = 0
	cfg.GreetTeaser = false
	cfg.Limits.ErrorSleep = 0
	cfg.Limits.ConnectionRate = 0
	cfg.Limits.UpstreamTimeout = Duration(5 * time.Second)
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GUARD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	up := newFakeUpstream(t, false)
	cfg := testConfig(up.addr())
	if mod != nil {
		mod(&cfg)
	}
	if cfg.Handoff == HandoffProxy {
		up.proxy.Store(true)
	}
	eng, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bl := &memBlocklist{}
	ev := &eventLog{eng: eng, bl: bl}
	return startGuard(t, cfg, Deps{Logger: testLogger(t), Sink: ev.sink, Blocklist: bl}, up, ev, bl)
}

func startGuard(t testing.TB, cfg Config, deps Deps, up *fakeUpstream, ev *eventLog, bl *memBlocklist) *harness {
	t.Helper()
	g, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	return serveGuard(t, g, l, up, ev, bl)
}

// serveGuard serves g on l until the test ends.
func serveGuard(t testing.TB, g *Guard, l net.Listener, up *fakeUpstream, ev *eventLog, bl *memBlocklist) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		g.Shutdown(sctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &harness{g: g, addr: l.Addr().String(), up: up, ev: ev, bl: bl}
}

// tclient is a raw SMTP client for tests.
type tclient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialFrom(t testing.TB, addr, src string) *tclient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &tclient{t: t, c: c, r: bufio.NewReader(c)}
}

func dial(t testing.TB, addr string) *tclient { return dialFrom(t, addr, "") }

func (c *tclient) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// reply reads one (possibly multi-line) reply: code and last line.
func (c *tclient) reply() (int, string) {
	c.t.Helper()
	var all []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply: %v (got %q)", err, all)
		}
		l = strings.TrimRight(l, "\r\n")
		all = append(all, l)
		if len(l) < 4 || l[3] != '-' {
			code, _ := strconv.Atoi(l[:min(3, len(l))])
			return code, strings.Join(all, "\n")
		}
	}
}

func (c *tclient) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	if got != code {
		c.t.Fatalf("want %d, got %q", code, text)
	}
	return text
}

// cmd sends one command and expects a reply code.
func (c *tclient) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// closed reports whether the server closed the connection (EOF) soon.
func (c *tclient) closed() bool {
	c.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := c.r.ReadByte()
	return err == io.EOF || err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s).Unmap() }

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// postfixInternal is Postfix's internal form of an address from a
// command: double quotes removed, backslash escapes inside them resolved.
func postfixInternal(ext string) string {
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
