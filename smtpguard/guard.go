// Package smtpguard implements the inline SMTP guard: a listener in front
// of Postfix that refuses bad clients before and during the SMTP dialogue
// and hands good sessions to the upstream MTA with the client's own
// address (XCLIENT or the PROXY protocol).
//
// The session is run by github.com/emersion/go-smtp. go-smtp has no hook
// before the greeting and no protocol policing, so the guard
//
//   - runs its own accept loop: each connection gets a goroutine that
//     checks allowlist, block list, connection limits, rate and DNSBL and
//     holds the banner for greet_pause (a client that talks first is a
//     pregreet bot); only then is it handed to go-smtp through a listener
//     whose Accept just receives admitted connections from a channel;
//   - wraps each admitted net.Conn in a line filter (conn.go) that gives
//     go-smtp one command line per Read, which lets it see pipelining
//     that PIPELINING did not allow, answer XCLIENT/VRFY/unknown and
//     non-SMTP commands itself, check HELO, count error replies (tarpit
//     after the soft limit, 421 at the hard limit), do STARTTLS below
//     go-smtp so that the filter keeps seeing plain text, and bound
//     command length, count and time;
//   - relays each transaction live to the upstream (session.go,
//     upstream.go): the upstream session opens at the first accepted RCPT,
//     each RCPT is forwarded so that upstream answers (550 5.1.1 User
//     unknown) reach the client unchanged and count as evidence.
//
// A client banned while its sessions run (EndBanned, which the daemon
// subscribes to the ban manager) gets 421 and is dropped at once. Above
// limits.stress_threshold of max_connections the guard is under stress
// and shortens its timeouts (live.go).
//
// Every rejection and protocol failure becomes a event.Event for the
// detectors, with Service "mxguard/guard".
package smtpguard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/prefixes"
	"github.com/mxguard/mxguard/internal/smtpcheck"
)

// Service is the Event.Service of every event the guard emits.
const Service = "mxguard/guard"

// EventSink receives every event the guard emits. It is called
// synchronously from the session's goroutine, so it must be safe for
// concurrent use and should be quick.
type EventSink func(event.Event)

// Blocklist says whether a client is banned (the ban manager's list). The
// guard asks it at connect, after the greet pause and before each command;
// a ban made meanwhile ends a waiting session at once only if the guard is
// told of it (EndBanned).
type Blocklist interface {
	Banned(netip.Addr) (reason string, banned bool)
}

// Deps are the guard's collaborators. All are optional.
type Deps struct {
	Logger *slog.Logger // nil discards
	Sink   EventSink    // nil drops events
	// UpstreamLogged says the upstream's own log feeds the same detectors
	// (the daemon tails it): its refusals, which Postfix logs against the
	// real client, are then emitted as context only, not as evidence, so
	// they are not counted twice.
	UpstreamLogged bool
	Blocklist      Blocklist // nil = nobody is banned
	Resolver       Resolver  // nil = miekg/dns to guard.resolver
	// Greylist is the greylist store when the daemon shares one with the
	// policy service (its owner closes it); nil = the guard opens
	// guard.greylist.db itself when greylisting is on.
	Greylist *greylist.Store

	now func() time.Time // greylisting's clock (tests); nil = time.Now
}

// Stats are the guard's counters since start.
type Stats struct {
	Accepted       uint64 // TCP connections accepted
	Active         int64  // connections open now (any stage)
	InPause        int64  // connections in the greet pause now
	Admitted       uint64 // handed to the SMTP session
	Blocked        uint64 // refused by the block list
	DNSBL          uint64 // refused by DNSBL score
	ConnLimit      uint64 // refused by a concurrency limit
	RateLimit      uint64 // refused by the connection rate
	Pregreet       uint64 // talked before the greeting
	Pipelining     uint64 // improper pipelining
	NonSMTP        uint64 // non-SMTP command
	TooManyErrors  uint64 // hard error limit reached
	Timeouts       uint64 // command or data timeout
	Rejects        uint64 // 4xx/5xx replies sent in sessions
	Messages       uint64 // messages accepted by the upstream
	UpstreamErrors uint64 // upstream unreachable or broken
	Greylisted     uint64 // recipients deferred by greylisting
	FCrDNS         uint64 // recipients refused for want of a confirmed client hostname
	BannedSessions uint64 // live sessions ended because their client was banned
	LineTimeouts   uint64 // of Timeouts: a command line not finished within line_timeout
	Stress         bool   // under stress now (limits.stress_threshold)
	StressEpisodes uint64 // times stress began
}

type counters struct {
	accepted, admitted, blocked, dnsbl, connLimit, rateLimit, pregreet, pipelining,
	nonSMTP, tooManyErrors, timeouts, rejects, messages, upstreamErrors, greylisted, fcrdns,
	bannedSessions, lineTimeouts, stressEpisodes atomic.Uint64
	active, inPause atomic.Int64
}

// Guard is the inline SMTP listener.
type Guard struct {
	cfg       Config
	log       *slog.Logger
	sink      EventSink
	upLogged  bool // Deps.UpstreamLogged
	blocklist Blocklist
	resolver  Resolver

	allow      []netip.Prefix
	sites      []dnsblSite
	domains    map[string]bool
	recipients map[string]bool
	heloDeny   map[string]bool
	tlsConfig  *tls.Config

	srv       *smtp.Server
	ctr       counters
	rate      *rateLimiter
	grey      *greylist.Store // nil: greylisting off
	greyOwned bool            // opened by New: closed by Shutdown

	mu        sync.Mutex
	perClient map[netip.Addr]int
	total     int
	listeners []net.Listener
	raw       map[net.Conn]struct{}                  // connections not yet handed to go-smtp
	live      map[*guardConn]struct{}                // connections in an SMTP session
	byAddr    map[netip.Addr]map[*guardConn]struct{} // live by client address (EndBanned)
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	nextID    atomic.Uint64

	// stress mode (live.go): levels fixed at New, state changed under mu
	stressEnter, stressLeave int
	stress                   atomic.Bool
	stressGen                atomic.Uint64             // bumped at each change: sessions recompute deadlines
	stressEnded              atomic.Pointer[time.Time] // when the last stress episode ended

	dataBufs sync.Pool // *relayBufs: a session's buffers while it relays a message
}

// New validates cfg and builds a Guard.
func New(cfg Config, deps Deps) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{
		cfg: cfg, log: deps.Logger, sink: deps.Sink, upLogged: deps.UpstreamLogged, blocklist: deps.Blocklist, resolver: deps.Resolver,
		domains: map[string]bool{}, recipients: map[string]bool{}, heloDeny: map[string]bool{},
		perClient: map[netip.Addr]int{}, raw: map[net.Conn]struct{}{}, live: map[*guardConn]struct{}{}, done: make(chan struct{}),
		byAddr: map[netip.Addr]map[*guardConn]struct{}{},
	}
	g.stressEnter, g.stressLeave = stressLevels(cfg.Limits)
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.allow, _ = prefixes.ParseList(cfg.Allowlist)
	for _, s := range cfg.DNSBL.Sites {
		site, _ := parseSite(s)
		g.sites = append(g.sites, site)
	}
	for _, d := range cfg.Domains {
		g.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	for _, r := range cfg.Recipients {
		g.recipients[strings.ToLower(r)] = true
	}
	for _, h := range cfg.Checks.HeloDenyNames {
		g.heloDeny[smtpcheck.HeloName(h)] = true
	}
	g.heloDeny[smtpcheck.HeloName(cfg.Hostname)] = true
	if g.resolver == nil && (len(g.sites) > 0 || cfg.Checks.SenderDomainDNS != Off || cfg.Checks.FCrDNS != Off) {
		addr := cfg.Resolver
		if addr == "" {
			addr = defaultResolverAddr()
		}
		g.resolver = newDNSResolver(addr, cfg.DNSBL.Timeout.D(), cfg.DNSBL.CacheTTL.D())
	}
	if cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("guard.tls: %w", err)
		}
		g.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.Limits.ConnectionRate > 0 {
		g.rate = newRateLimiter(cfg.Limits.ConnectionRate, cfg.Limits.ConnectionRateWindow.D())
	}

	s := smtp.NewServer(backend{g})
	s.Domain = cfg.Hostname
	s.MaxLineLength = 0 // command lines are bounded by the filter; message lines may be long
	s.MaxMessageBytes = cfg.Limits.MaxMessageBytes
	s.MaxRecipients = cfg.Limits.MaxRecipients
	s.WriteTimeout = cfg.Limits.WriteTimeout.D()
	s.ReadTimeout = 0 // the filter sets its own deadlines
	s.ErrorLog = slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)
	g.srv = s
	if cfg.Greylist.Enabled {
		// last: nothing after it may fail and leave the file locked
		var err error
		if g.grey, g.greyOwned, err = greylist.Share(deps.Greylist, cfg.Greylist, g.log, deps.now); err != nil {
			return nil, fmt.Errorf("guard.%w", err)
		}
	}
	return g, nil
}

// Stats returns a snapshot of the counters.
func (g *Guard) Stats() Stats {
	c := &g.ctr
	return Stats{
		Accepted: c.accepted.Load(), Active: c.active.Load(), InPause: c.inPause.Load(),
		Admitted: c.admitted.Load(), Blocked: c.blocked.Load(), DNSBL: c.dnsbl.Load(),
		ConnLimit: c.connLimit.Load(), RateLimit: c.rateLimit.Load(), Pregreet: c.pregreet.Load(),
		Pipelining: c.pipelining.Load(), NonSMTP: c.nonSMTP.Load(), TooManyErrors: c.tooManyErrors.Load(),
		Timeouts: c.timeouts.Load(), Rejects: c.rejects.Load(), Messages: c.messages.Load(),
		UpstreamErrors: c.upstreamErrors.Load(), Greylisted: c.greylisted.Load(), FCrDNS: c.fcrdns.Load(),
		BannedSessions: c.bannedSessions.Load(), LineTimeouts: c.lineTimeouts.Load(),
		Stress: g.stressed(), StressEpisodes: c.stressEpisodes.Load(),
	}
}

// Serve accepts connections on l until ctx ends or Shutdown is called; it
// then stops accepting and returns nil (open sessions are left to
// Shutdown). Other errors from l are returned.
func (g *Guard) Serve(ctx context.Context, l net.Listener) error {
	g.mu.Lock()
	select {
	case <-g.done:
		g.mu.Unlock()
		return smtp.ErrServerClosed
	default:
	}
	g.listeners = append(g.listeners, l)
	g.mu.Unlock()

	admitted := &chanListener{addr: l.Addr(), ch: make(chan net.Conn), done: g.done}
	srvErr := make(chan error, 1)
	go func() { srvErr <- g.srv.Serve(admitted) }()
	stop := context.AfterFunc(ctx, func() { g.closeListeners() })
	defer stop()

	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-g.done:
				return nil
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				g.log.Warn("guard: accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("guard: accept: %w", err)
		}
		delay = 0
		g.ctr.accepted.Add(1)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.admit(c, admitted)
		}()
	}
}

// temporaryError is what the net package reports for EMFILE/ENFILE-like
// accept errors, which are worth retrying.
type temporaryError interface{ Temporary() bool }

func isTemporary(err error) bool {
	var t temporaryError
	return errors.As(err, &t) && t.Temporary()
}

func (g *Guard) closeListeners() {
	g.closeOnce.Do(func() { close(g.done) })
	g.mu.Lock()
	for _, l := range g.listeners {
		l.Close()
	}
	g.mu.Unlock()
}

// Shutdown stops accepting, drops connections still in the connection
// stage and waits for SMTP sessions to end until ctx is done, then closes
// them. It also closes the greylist database: call it once New has
// succeeded, even if Serve never ran.
func (g *Guard) Shutdown(ctx context.Context) error {
	g.closeListeners()
	g.mu.Lock()
	for c := range g.raw {
		c.Close()
	}
	g.mu.Unlock()
	err := g.srv.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		// Sessions still open: close their sockets; each session then
		// ends on its own goroutine (a transaction in progress is not
		// delivered: the upstream is dropped without the final dot).
		g.mu.Lock()
		for c := range g.live {
			c.raw.Close()
		}
		g.mu.Unlock()
		for i := 0; i < 200; i++ { // they end quickly once their sockets are gone
			g.mu.Lock()
			n := len(g.live)
			g.mu.Unlock()
			if n == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waited := make(chan struct{})
	go func() { g.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
	}
	if g.grey != nil && g.greyOwned {
		// Sessions still running (ctx ended first) find the database
		// closed and let their recipients pass.
		if cerr := g.grey.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("guard: greylist: %w", cerr)
		}
	}
	return err
}

// chanListener is the listener go-smtp serves: Accept returns admitted
// connections only and never an error until the guard is closed.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

func addrOf(a net.Addr) (netip.Addr, int) {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return ap.Addr().Unmap(), int(ap.Port())
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, 0
	}
	return ap.Addr().Unmap(), int(ap.Port())
}

func (g *Guard) allowed(a netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// admit runs the connection stage for c: limits, block list, DNSBL,
// greet pause. It either refuses c or hands it to go-smtp.
func (g *Guard) admit(raw net.Conn, admitted *chanListener) {
	ip, port := addrOf(raw.RemoteAddr())
	cs := &connState{g: g, id: g.nextID.Add(1), ip: ip, port: port, local: raw.LocalAddr(), start: time.Now(), stage: "CONNECT",
		banKill: make(chan struct{})}
	cs.allowlisted = g.allowed(ip)
	g.ctr.active.Add(1)

	g.mu.Lock()
	g.raw[raw] = struct{}{}
	g.total++
	g.perClient[ip]++
	nTotal, nClient := g.total, g.perClient[ip]
	g.checkStress(g.total)
	g.mu.Unlock()
	handed := false
	defer func() {
		g.mu.Lock()
		delete(g.raw, raw)
		g.mu.Unlock()
		if !handed {
			raw.Close()
			g.release(ip)
			cs.logVerdict()
		}
	}()

	g.emit(cs, event.Event{Kind: event.KindConnect})
	wt := g.cfg.Limits.WriteTimeout.D()
	refuse := func(reply string) {
		raw.SetWriteDeadline(time.Now().Add(min(wt, 10*time.Second)))
		io.WriteString(raw, reply+"\r\n")
	}

	// blocked refuses a banned client.
	blocked := func() bool {
		if cs.allowlisted || g.blocklist == nil {
			return false
		}
		why, banned := g.blocklist.Banned(ip)
		if !banned {
			return false
		}
		g.ctr.blocked.Add(1)
		reply := "554 5.7.1 Service unavailable; Client host [" + ip.String() + "] blocked by mxguard"
		refuse(reply)
		cs.verdict = "blocked: " + why
		// Not evidence: the client is already banned, and counting
		// refused reconnects would feed the ban back into itself.
		g.reject(cs, "CONNECT", reply, event.ReasonClientAccess, false)
		return true
	}
	if !cs.allowlisted {
		if blocked() {
			return
		}
		l := g.cfg.Limits
		if l.MaxConnections > 0 && nTotal > l.MaxConnections || l.MaxConnectionsPerClient > 0 && nClient > l.MaxConnectionsPerClient {
			g.ctr.connLimit.Add(1)
			reply := "421 4.7.0 " + g.cfg.Hostname + " Error: too many connections from " + ip.String()
			refuse(reply)
			cs.verdict = "connection limit"
			g.reject(cs, "CONNECT", reply, event.ReasonOther, false)
			return
		}
		if g.rate != nil && !g.rate.allow(ip, time.Now()) {
			g.ctr.rateLimit.Add(1)
			reply := "421 4.7.0 " + g.cfg.Hostname + " Error: too many connections from " + ip.String()
			refuse(reply)
			cs.verdict = "connection rate"
			g.reject(cs, "CONNECT", reply, event.ReasonOther, false)
			return
		}
	}

	pause := g.greetPause()
	if cs.allowlisted {
		pause = 0
	}
	// DNSBL lookups run during the greet pause.
	type dnsblResult struct {
		score int
		zones []string
	}
	var dnsblCh chan dnsblResult
	if !cs.allowlisted && len(g.sites) > 0 && g.resolver != nil {
		dnsblCh = make(chan dnsblResult, 1)
		go func() {
			s, z := dnsblScore(context.Background(), g.resolver, g.sites, ip, g.cfg.DNSBL.Timeout.D())
			sort.Strings(z)
			dnsblCh <- dnsblResult{s, z}
		}()
	}

	// So does the FCrDNS lookup; the first RCPT waits for its result.
	if g.cfg.Checks.FCrDNS != Off && g.resolver != nil {
		ch := make(chan rdnsResult, 1)
		cs.rdnsCh = ch
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), g.cfg.DNSBL.Timeout.D())
			defer cancel()
			name, err := fcrdns(ctx, g.resolver, ip)
			ch <- rdnsResult{name, err}
		}()
	}

	if pause > 0 {
		g.ctr.inPause.Add(1)
		if g.cfg.GreetTeaser {
			raw.SetWriteDeadline(time.Now().Add(wt))
			if _, err := io.WriteString(raw, "220-"+g.cfg.Hostname+" ESMTP\r\n"); err != nil {
				g.ctr.inPause.Add(-1)
				cs.verdict = "lost connection in greet pause"
				return
			}
		}
		raw.SetReadDeadline(time.Now().Add(pause))
		var buf [512]byte
		n, err := raw.Read(buf[:])
		raw.SetReadDeadline(time.Time{})
		g.ctr.inPause.Add(-1)
		if n > 0 {
			g.ctr.pregreet.Add(1)
			cs.verdict = "pregreet"
			refuse("554 5.5.1 Protocol error: talking before greeting")
			g.emit(cs, event.Event{Kind: event.KindPregreet, Stage: "CONNECT", Code: 554, DSN: "5.5.1",
				Count: n, Detail: sanitize(string(buf[:n]), 100), Abuse: true,
				Raw: fmt.Sprintf("PREGREET %d after %s from [%s]:%d: %s", n, time.Since(cs.start).Round(time.Millisecond), ip, port, sanitize(string(buf[:n]), 100))})
			return
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			cs.verdict = "hangup in greet pause"
			return
		}
		if blocked() { // banned during the pause (by another session, a peer, by hand)
			return
		}
	}
	if dnsblCh != nil {
		var r dnsblResult
		select {
		case r = <-dnsblCh:
		case <-g.done:
			return
		}
		if r.score >= g.cfg.DNSBL.Threshold {
			g.ctr.dnsbl.Add(1)
			reply := "554 5.7.1 Service unavailable; client [" + ip.String() + "] blocked using " + strings.Join(r.zones, ", ")
			refuse(reply)
			cs.verdict = "dnsbl " + strings.Join(r.zones, ",")
			g.emit(cs, event.Event{Kind: event.KindDNSBL, Stage: "CONNECT", Code: 554, DSN: "5.7.1",
				Count: r.score, Detail: strings.Join(r.zones, ","), Abuse: true,
				Raw: fmt.Sprintf("DNSBL rank %d for [%s]:%d (%s)", r.score, ip, port, strings.Join(r.zones, ","))})
			return
		}
	}

	gc := newGuardConn(raw, cs)
	g.mu.Lock()
	g.track(gc)
	g.mu.Unlock()
	// counted before the hand-over: the session may end before this
	// goroutine runs again
	g.ctr.admitted.Add(1)
	select {
	case admitted.ch <- gc:
		handed = true
	case <-g.done:
		g.ctr.admitted.Add(^uint64(0))
		g.mu.Lock()
		g.untrack(gc)
		g.mu.Unlock()
	}
}

// release undoes the connection counting of admit.
func (g *Guard) release(ip netip.Addr) {
	g.mu.Lock()
	g.total--
	if g.perClient[ip]--; g.perClient[ip] <= 0 {
		delete(g.perClient, ip)
	}
	g.checkStress(g.total)
	g.mu.Unlock()
	g.ctr.active.Add(-1)
}

// emit fills the common fields of ev and sends it to the sink.
func (g *Guard) emit(cs *connState, ev event.Event) {
	if g.sink == nil {
		return
	}
	ev.Time = time.Now()
	ev.Service = Service
	ev.Host = g.cfg.Hostname
	ev.Client = cs.ip
	ev.Port = cs.port
	ev.ClientName = "unknown"
	if cs.rdnsDone && cs.rdns.name != "" {
		ev.ClientName = cs.rdns.name
	}
	if ev.Helo == "" {
		ev.Helo = cs.helo
	}
	if ev.Raw == "" {
		ev.Raw = ev.Kind.String() + " from unknown[" + cs.ip.String() + "]:" + strconv.Itoa(cs.port)
	}
	g.sink(ev)
}

// reject emits a KindReject event for the reply text "NNN X.Y.Z text",
// with a Postfix-like raw line as evidence.
func (g *Guard) reject(cs *connState, stage, reply string, reason event.Reason, abuse bool) {
	g.rejectEnv(cs, stage, reply, reason, abuse, "", "")
}

func (g *Guard) rejectEnv(cs *connState, stage, reply string, reason event.Reason, abuse bool, from, to string) {
	code, dsn, text := splitReply(reply)
	raw := fmt.Sprintf("NOQUEUE: reject: %s from unknown[%s]: %s", stage, cs.ip, reply)
	if stage != "CONNECT" {
		raw += fmt.Sprintf("; from=<%s> to=<%s> proto=%s helo=<%s>", from, to, cs.proto(), cs.helo)
	}
	g.emit(cs, event.Event{Kind: event.KindReject, Stage: stage, Code: code, DSN: dsn,
		Reason: reason, Detail: text, Abuse: abuse, From: from, To: to, Raw: raw})
}

// splitReply splits "550 5.1.1 text" into its parts.
func splitReply(s string) (int, string, string) {
	code := 0
	if len(s) >= 3 {
		for _, c := range s[:3] {
			if c < '0' || c > '9' {
				return 0, "", s
			}
			code = code*10 + int(c-'0')
		}
		s = strings.TrimPrefix(s[3:], " ")
	}
	dsn := ""
	if f, rest, ok := strings.Cut(s, " "); ok && len(f) >= 5 && f[1] == '.' && (f[0] == '2' || f[0] == '4' || f[0] == '5') {
		dsn, s = f, rest
	}
	return code, dsn, s
}

// sanitize makes client text safe for logs: printable ASCII only, cut to n bytes.
func sanitize(s string, n int) string {
	s = strings.TrimRight(s, "\r\n")
	if printable(s) && len(s) <= n {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		c := s[i]
		switch {
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		case c == '\r':
			b.WriteString("\\r")
		case c == '\n':
			b.WriteString("\\n")
		default:
			fmt.Fprintf(&b, "\\x%02x", c)
		}
	}
	return b.String()
}

// printable reports whether s has only printable ASCII (sanitize keeps
// it as it is).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// rateLimiter is a per-address token bucket: n tokens per window.
type rateLimiter struct {
	mu     sync.Mutex
	n      float64
	window time.Duration
	m      map[netip.Addr]*bucket
	sweep  time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(n int, window time.Duration) *rateLimiter {
	return &rateLimiter{n: float64(n), window: window, m: map[netip.Addr]*bucket{}}
}

func (r *rateLimiter) allow(a netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.sweep) > r.window && len(r.m) > 1000 {
		r.sweep = now
		for k, b := range r.m {
			if now.Sub(b.last) > r.window {
				delete(r.m, k)
			}
		}
	}
	b, ok := r.m[a]
	if !ok {
		b = &bucket{tokens: r.n, last: now}
		r.m[a] = b
	}
	b.tokens = min(r.n, b.tokens+now.Sub(b.last).Seconds()*r.n/r.window.Seconds())
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
