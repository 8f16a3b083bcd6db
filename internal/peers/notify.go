package peers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/dnsserve"
	"github.com/mxguard/mxguard/internal/ratelog"
)

// notifyServer answers NOTIFYs (RFC 1996) on one address, UDP and TCP
// (Knot sends them over TCP, BIND and NSD over UDP), for the followers
// whose notify_listen it is. A NOTIFY only makes a follower
// check at once: the transfer that follows is TSIG-signed either way, so
// a forged NOTIFY can at most cause an early check. Still, it is taken
// only from the zone's primary, and one that carries a TSIG must verify.
type notifyServer struct {
	addr    string
	zones   map[string]*Follower // canonical zone → follower
	udp     *dns.Server
	tcp     *dns.Server
	log     *slog.Logger
	refusal *ratelog.Log
	refused atomic.Uint64
}

func newNotifyServer(addr string, fs []*Follower, logger *slog.Logger) *notifyServer {
	s := &notifyServer{addr: addr, zones: map[string]*Follower{}, log: logger, refusal: ratelog.New(logger, 10*time.Second)}
	secrets := map[string]string{}
	for _, f := range fs {
		s.zones[f.origin] = f
		if k := f.cfg.KeyFQDN(); k != "" {
			secrets[k] = f.cfg.TSIG.Secret
		}
	}
	s.udp = &dns.Server{Addr: addr, Net: "udp", Handler: s, TsigSecret: secrets,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	s.tcp = &dns.Server{Addr: addr, Net: "tcp", Handler: s, TsigSecret: secrets,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxTCPQueries: 16}
	return s
}

// maxNotifyConns bounds the NOTIFY listener's TCP connections: a primary
// sends NOTIFY over UDP, TCP is seldom used.
const maxNotifyConns = 32

// listen binds the sockets (so that a taken port fails the start); with
// port 0 TCP takes the port UDP got, trying again with another if that
// one is taken for TCP.
func (s *notifyServer) listen() error {
	pc, ln, err := dnsserve.Listen(s.addr, dnsserve.TCPLimits{Max: maxNotifyConns})
	if err != nil {
		return fmt.Errorf("peers notify_listen %s: %w", s.addr, err)
	}
	s.udp.PacketConn, s.tcp.Listener = pc, ln
	s.tcp.DecorateReader = ln.DecorateReader
	return nil
}

// Addr is the bound address (tests listen on port 0).
func (s *notifyServer) Addr() net.Addr { return s.udp.PacketConn.LocalAddr() }

// serve runs both servers until they are shut down.
func (s *notifyServer) serve() error {
	errs := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		go func() {
			err := srv.ActivateAndServe()
			if errors.Is(err, net.ErrClosed) {
				err = nil
			}
			errs <- err
		}()
	}
	return errors.Join(<-errs, <-errs)
}

// shutdown stops both servers; closing the sockets also ends a server
// whose Serve had not started yet.
func (s *notifyServer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		_ = srv.ShutdownContext(ctx)
	}
	s.udp.PacketConn.Close()
	s.tcp.Listener.Close()
}

// closeSockets releases the sockets of a listener that never served.
func (s *notifyServer) closeSockets() {
	s.udp.PacketConn.Close()
	s.tcp.Listener.Close()
}

// ServeDNS answers one message.
func (s *notifyServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	reply := new(dns.Msg)
	reply.SetReply(req)
	refuse := func(rcode int, why string, args ...any) {
		s.refused.Add(1)
		s.refusal.Warn("notify", "NOTIFY refused: "+why, append([]any{"from", w.RemoteAddr().String()}, args...)...)
		reply.Rcode = rcode
		_ = w.WriteMsg(reply)
	}
	if req.Opcode != dns.OpcodeNotify || len(req.Question) != 1 || req.Question[0].Qtype != dns.TypeSOA {
		refuse(dns.RcodeNotImplemented, "not a NOTIFY for a SOA")
		return
	}
	zone := dns.CanonicalName(req.Question[0].Name)
	f := s.zones[zone]
	if f == nil {
		refuse(dns.RcodeNotAuth, "not a peer zone", "zone", zone)
		return
	}
	from := remoteAddr(w.RemoteAddr())
	allowed := false
	for _, a := range f.primaryAddrs(context.Background()) {
		if a == from {
			allowed = true
			break
		}
	}
	if !allowed {
		refuse(dns.RcodeRefused, "not from the zone's primary", "zone", zone, "primary", f.cfg.Primary)
		return
	}
	t := req.IsTsig()
	if t == nil && f.cfg.KeyFQDN() != "" {
		// anyone on the primary's path could forge one: with a key, only
		// a signed NOTIFY makes us ask early
		refuse(dns.RcodeRefused, "unsigned, and the zone has a key", "zone", zone, "key", f.cfg.KeyFQDN())
		return
	}
	if t != nil {
		if err := w.TsigStatus(); err != nil || dns.CanonicalName(t.Hdr.Name) != f.cfg.KeyFQDN() {
			refuse(dns.RcodeNotAuth, "TSIG does not verify", "zone", zone, "key", t.Hdr.Name, "err", err)
			return
		}
		reply.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
	}
	reply.Authoritative = true
	_ = w.WriteMsg(reply)
	s.log.Debug("NOTIFY", "zone", zone, "from", from)
	f.Notify()
}

func remoteAddr(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		if ap, ok := netip.AddrFromSlice(u.IP); ok {
			return ap.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
