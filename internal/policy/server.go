// Package policy is mxguard's Postfix policy delegation service
// (SMTPD_POLICY_README): smtpd asks it over a unix or TCP socket,
// "check_policy_service", and it answers from the shared engine: the ban
// manager's index (block list), the HELO, DNSBL and FCrDNS checks of
// internal/smtpcheck, the one greylist store (internal/greylist) and
// per-sender rate limits. Each decision that is evidence becomes an
// event.Event for the daemon's pipeline (Service "mxguard/policy").
//
// Every reply text starts with event.PolicyMark ("mxguard: "), so the
// reject line Postfix logs for it is classed as not evidence: the policy
// service's own event already counted it.
//
// A request it cannot read (malformed, too large, without
// request=smtpd_access_policy) or an internal error closes that
// connection without a reply; Postfix then retries and falls back to the
// check_policy_service default_action (DUNNO, see the README), so a
// failure of mxguard never stops mail.
package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/prefixes"
	"github.com/mxguard/mxguard/internal/ratelog"
	"github.com/mxguard/mxguard/internal/smtpcheck"
)

// Service is the Event.Service of every event the policy service emits.
const Service = "mxguard/policy"

// EventSink receives the events; called from connection goroutines, so
// it must be safe for concurrent use.
type EventSink func(event.Event)

// Blocklist is the ban manager's index (ban.Manager.LookupEnforced): the
// longest prefix holding the address with a ban to enforce (never a dry
// run's would-be ban).
type Blocklist interface {
	LookupEnforced(a netip.Addr, now time.Time) (ban.Ban, bool)
}

// Deps are the service's collaborators; all optional.
type Deps struct {
	Logger    *slog.Logger
	Sink      EventSink
	Blocklist Blocklist
	// Greylist is the shared store (the daemon opens one for guard and
	// policy); nil with greylisting on: New opens greylist.db itself and
	// Shutdown closes it.
	Greylist *greylist.Store
	// Resolver for DNSBL and FCrDNS; nil = one of our own when needed.
	Resolver smtpcheck.Resolver
	Now      func() time.Time // nil = time.Now
}

// Stats are the service's counters since start.
type Stats struct {
	Connections uint64 // accepted
	Active      int64  // open now
	Refused     uint64 // closed at once: max_connections
	Requests    uint64 // answered
	BadRequests uint64 // closed: malformed, too large, no request=
	Timeouts    uint64 // closed: idle or request timeout
	Errors      uint64 // closed: internal error
	Blocked     uint64 // block list hits
	Helo        uint64 // HELO check hits
	DNSBL       uint64 // DNSBL hits
	FCrDNS      uint64 // FCrDNS hits
	Greylisted  uint64 // recipients deferred by greylisting
	RateLimited uint64 // requests over a rate limit
	BadClient   uint64 // unparsable client_address (answered DUNNO)
	Denied      uint64 // closed at once: a peer not in peer_users / allow_peers
}

type counters struct {
	conns, refused, requests, bad, timeouts, errors, blocked, helo, dnsbl, fcrdns,
	greylisted, rateLimited, badClient, denied atomic.Uint64
	active atomic.Int64
}

// Server is the policy service.
type Server struct {
	cfg       Config
	log       *slog.Logger
	sink      EventSink
	blocklist Blocklist
	grey      *greylist.Store
	greyOwned bool
	resolver  smtpcheck.Resolver
	now       func() time.Time

	allow    []netip.Prefix
	sites    []smtpcheck.Site
	heloDeny map[string]bool
	rate     *rateLimiter
	lim      readLimits
	warn     *ratelog.Log

	perms      socketPerms     // of a unix socket, resolved before bind
	peerUIDs   map[uint32]bool // who may ask over a unix socket
	allowPeers []netip.Prefix  // who may ask over TCP

	ctr counters

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// New validates cfg and builds the service.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: deps.Logger, sink: deps.Sink, blocklist: deps.Blocklist,
		resolver: deps.Resolver, now: deps.Now, heloDeny: map[string]bool{}, conns: map[net.Conn]struct{}{},
		lim: readLimits{maxValue: cfg.Limits.MaxAttributeLength, maxAttrs: cfg.Limits.MaxAttributes, maxBytes: cfg.Limits.MaxRequestBytes}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.warn = ratelog.New(s.log, 10*time.Second)
	s.allow, _ = cfg.allowlist()
	s.allowPeers, _ = prefixes.ParseList(cfg.AllowPeers)
	if network, _, _ := cfg.ListenAddr(); network == "unix" {
		var err error
		if s.perms, err = cfg.socketPerms(); err != nil {
			return nil, err
		}
		if s.peerUIDs, err = cfg.peerUIDs(s.perms.uid); err != nil {
			return nil, err
		}
	}
	for _, site := range cfg.DNSBL.Sites {
		st, _ := smtpcheck.ParseSite(site)
		s.sites = append(s.sites, st)
	}
	for _, h := range cfg.Checks.HeloDenyNames {
		s.heloDeny[smtpcheck.HeloName(h)] = true
	}
	s.heloDeny[smtpcheck.HeloName(cfg.Hostname)] = true
	if len(cfg.RateLimit.Limits) > 0 {
		s.rate = newRateLimiter(cfg.RateLimit.Limits, cfg.RateLimit.MaxKeys)
	}
	needDNS := len(s.sites) > 0 && cfg.Checks.DNSBL != Off || cfg.Checks.FCrDNS != Off
	if s.resolver == nil && needDNS {
		addr := cfg.Resolver
		if addr == "" {
			addr = smtpcheck.DefaultResolverAddr()
		}
		s.resolver = smtpcheck.NewResolver(addr, cfg.DNSBL.Timeout.D(), cfg.DNSBL.CacheTTL.D())
	}
	if cfg.Greylist.Enabled {
		var err error
		if s.grey, s.greyOwned, err = greylist.Share(deps.Greylist, cfg.Greylist.Config, s.log, deps.Now); err != nil {
			return nil, fmt.Errorf("policy.%w", err)
		}
	}
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.ctr
	return Stats{Connections: c.conns.Load(), Active: c.active.Load(), Refused: c.refused.Load(),
		Requests: c.requests.Load(), BadRequests: c.bad.Load(), Timeouts: c.timeouts.Load(), Errors: c.errors.Load(),
		Blocked: c.blocked.Load(), Helo: c.helo.Load(), DNSBL: c.dnsbl.Load(), FCrDNS: c.fcrdns.Load(),
		Greylisted: c.greylisted.Load(), RateLimited: c.rateLimited.Load(), BadClient: c.badClient.Load(),
		Denied: c.denied.Load()}
}

// Listen opens policy.listen. A unix socket gets its owner, group and
// mode before it appears under its name (see listenUnix); a stale socket
// is replaced, a live one or anything else at the path is refused.
func (s *Server) Listen() (net.Listener, error) {
	network, addr, err := s.cfg.ListenAddr()
	if err != nil {
		return nil, fmt.Errorf("policy.listen: %w", err)
	}
	if network == "tcp" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("policy.listen %s: %w", s.cfg.Listen, err)
		}
		return l, nil
	}
	l, err := listenUnix(addr, s.perms)
	if err != nil {
		return nil, fmt.Errorf("policy.listen %s: %w", s.cfg.Listen, err)
	}
	return l, nil
}

// socketPerms resolves owner, group and mode (before anything is bound).
func (c *Config) socketPerms() (socketPerms, error) {
	p := socketPerms{uid: -1, gid: -1}
	mode, err := c.SocketMode()
	if err != nil {
		return p, fmt.Errorf("policy.mode: %w", err)
	}
	p.mode = mode
	if c.Owner != "" {
		if p.uid, err = lookupUID(c.Owner); err != nil {
			return p, fmt.Errorf("policy.owner: %w", err)
		}
	}
	if c.Group != "" {
		g, err := user.LookupGroup(c.Group)
		if err != nil {
			return p, fmt.Errorf("policy.group: %w", err)
		}
		if p.gid, err = strconv.Atoi(g.Gid); err != nil {
			return p, fmt.Errorf("policy.group: gid %q: %w", g.Gid, err)
		}
	}
	return p, nil
}

// lookupUID takes a user name or a numeric uid.
func lookupUID(name string) (int, error) {
	if n, err := strconv.ParseUint(name, 10, 31); err == nil {
		return int(n), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return -1, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return -1, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	return uid, nil
}

// peerUIDs are the users that may ask over a unix socket: root, the
// daemon's own user, owner, and peer_users.
func (c *Config) peerUIDs(owner int) (map[uint32]bool, error) {
	m := map[uint32]bool{0: true, uint32(os.Geteuid()): true}
	if owner >= 0 {
		m[uint32(owner)] = true
	}
	for _, name := range c.PeerUsers {
		uid, err := lookupUID(name)
		if err != nil {
			return nil, fmt.Errorf("policy.peer_users: %w", err)
		}
		m[uint32(uid)] = true
	}
	return m, nil
}

// peer is who is at the other end of a policy connection.
type peer struct {
	// allowed: a user in peerUIDs (unix) or an address in allow_peers (inet)
	allowed bool
	// evidence: its findings may count against clients (unix always:
	// only the allowed users can ask; inet only with inet_evidence,
	// because any local process can connect to a TCP port)
	evidence bool
	who      string // for the log
}

// checkPeer identifies the other end of c. A connection of another type
// (a listener handed to Serve by a test) is allowed, as evidence.
func (s *Server) checkPeer(c net.Conn) peer {
	switch conn := c.(type) {
	case *net.UnixConn:
		raw, err := conn.SyscallConn()
		if err != nil {
			return peer{who: "unix: " + err.Error()}
		}
		var cred *unix.Ucred
		var credErr error
		if err := raw.Control(func(fd uintptr) {
			cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		}); err != nil {
			credErr = err
		}
		if credErr != nil {
			return peer{who: "unix: SO_PEERCRED: " + credErr.Error()}
		}
		return peer{allowed: s.peerUIDs[cred.Uid], evidence: true,
			who: fmt.Sprintf("uid %d pid %d", cred.Uid, cred.Pid)}
	case *net.TCPConn:
		ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
		if err != nil {
			return peer{who: conn.RemoteAddr().String()}
		}
		a := ap.Addr().Unmap()
		ok := false
		for _, p := range s.allowPeers {
			if p.Contains(a) {
				ok = true
				break
			}
		}
		return peer{allowed: ok, evidence: s.cfg.InetEvidence, who: a.String()}
	}
	return peer{allowed: true, evidence: true, who: c.RemoteAddr().String()}
}

// Serve accepts connections on l until ctx ends or Shutdown is called,
// then returns nil.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and the like: back off, never spin
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.warn.Warn("accept", "policy: accept", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.ctr.conns.Add(1)
		if n := s.ctr.active.Add(1); n > int64(s.cfg.Limits.MaxConnections) {
			s.ctr.active.Add(-1)
			s.ctr.refused.Add(1)
			c.Close()
			s.warn.Warn("max_connections", "policy: too many connections, closing new ones (Postfix uses default_action)",
				"max_connections", s.cfg.Limits.MaxConnections)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			s.ctr.active.Add(-1)
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Shutdown stops accepting, closes every connection (Postfix retries or
// uses default_action) and waits for their goroutines until ctx ends; it
// closes the greylist store if New opened it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("policy: shutdown: %w", ctx.Err())
	}
	if s.greyOwned {
		if cerr := s.grey.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("policy: greylist: %w", cerr)
		}
	}
	return err
}

// connState is what one policy connection (one smtpd process) carries
// from request to request.
type connState struct {
	req request
	// greyCredited is the Postfix instance (one message) that already
	// counted toward greylist.auto_allowlist: once per message, not per
	// recipient.
	greyCredited string
	// evidence: findings on this connection may count against clients
	evidence bool
	// pending are the events of the request being answered: sent after
	// its reply is written, so that a request Postfix gave up on (and
	// will ask again) is not counted twice
	pending []event.Event
}

// serveConn answers requests on c until it closes, times out or sends one
// the service refuses. A panic ends this connection only.
func (s *Server) serveConn(c net.Conn) {
	defer func() {
		if p := recover(); p != nil {
			s.ctr.errors.Add(1)
			s.warn.Warn("panic", "policy: internal error, connection closed", "panic", p, "stack", string(debug.Stack()))
		}
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.ctr.active.Add(-1)
		s.wg.Done()
	}()
	p := s.checkPeer(c)
	if !p.allowed {
		s.ctr.denied.Add(1)
		s.warn.Warn("denied", "policy: connection from a peer not allowed to ask (policy.peer_users, policy.allow_peers), closed",
			"peer", p.who)
		return
	}
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 512)
	cs := &connState{req: request{buf: make([]byte, 0, 1024)}, evidence: p.evidence}
	idle, reqTimeout := s.cfg.Limits.IdleTimeout.D(), s.cfg.Limits.RequestTimeout.D()
	started := func() { c.SetReadDeadline(time.Now().Add(reqTimeout)) }
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		err := readRequest(br, &cs.req, s.lim, started)
		if err != nil {
			var ne net.Error
			switch {
			case err == io.EOF, errors.Is(err, net.ErrClosed):
			case errors.As(err, &ne) && ne.Timeout():
				s.ctr.timeouts.Add(1)
			case errors.Is(err, errMalformed), errors.Is(err, errTooMany), errors.Is(err, errTooBig),
				errors.Is(err, errNotPolicy), errors.Is(err, errEOFInRecord):
				s.ctr.bad.Add(1)
				s.warn.Warn("bad_request", "policy: bad request, connection closed", "err", err, "remote", c.RemoteAddr().String())
			default:
				s.warn.Warn("read", "policy: read", "err", err)
			}
			return
		}
		action := s.decide(cs, &cs.req)
		s.ctr.requests.Add(1) // before the reply: a client reading it sees the count
		c.SetWriteDeadline(time.Now().Add(reqTimeout))
		if err := writeReply(bw, action); err != nil {
			cs.pending = cs.pending[:0]
			return
		}
		for i := range cs.pending {
			s.sink(cs.pending[i])
			cs.pending[i] = event.Event{}
		}
		cs.pending = cs.pending[:0]
	}
}
