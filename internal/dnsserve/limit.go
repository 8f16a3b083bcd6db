package dnsserve

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Defaults of TCPLimits.
const (
	// MaxTCPPerSource bounds one client's connections (an IPv6 client:
	// its /64), so that one client cannot fill the shared pool.
	MaxTCPPerSource = 4
	// MaxTrustedTCPConns bounds the connections of trusted clients
	// (secondaries), who have slots of their own beside the shared pool.
	MaxTrustedTCPConns = 64
	// UntrustedIdle is how long an untrusted client's connection may wait
	// for its next query: idle connections are what fills the pool.
	UntrustedIdle = 2 * time.Second
	// UntrustedMaxQueries bounds the queries of one untrusted connection.
	UntrustedMaxQueries = 20
)

// TCPLimits bounds the TCP connections of a DNS listener. Zero fields take
// the defaults.
type TCPLimits struct {
	Max        int                   // untrusted connections at once (MaxTCPConns)
	PerSource  int                   // untrusted connections from one address or IPv6 /64 (MaxTCPPerSource)
	Trusted    func(netip.Addr) bool // clients with their own slots and no per-source bound; nil: none
	TrustedMax int                   // trusted connections at once (MaxTrustedTCPConns)
	Idle       time.Duration         // an untrusted connection's idle timeout (UntrustedIdle)
	MaxQueries int                   // queries per untrusted connection (UntrustedMaxQueries)
}

func (l TCPLimits) withDefaults() TCPLimits {
	if l.Max <= 0 {
		l.Max = MaxTCPConns
	}
	if l.PerSource <= 0 {
		l.PerSource = MaxTCPPerSource
	}
	if l.TrustedMax <= 0 {
		l.TrustedMax = MaxTrustedTCPConns
	}
	if l.Idle <= 0 {
		l.Idle = UntrustedIdle
	}
	if l.MaxQueries <= 0 {
		l.MaxQueries = UntrustedMaxQueries
	}
	return l
}

// Listener is a TCP listener that closes, as soon as it accepts them, the
// connections over its limits: a client holding idle connections must not
// make the ones of a secondary wait in the kernel's backlog. Set the
// dns.Server's DecorateReader to its DecorateReader, so that untrusted
// connections get the shorter idle timeout and query bound.
type Listener struct {
	net.Listener
	lim TCPLimits

	mu        sync.Mutex
	untrusted int
	trusted   int
	perSource map[netip.Addr]int
	refused   uint64
}

func newListener(ln net.Listener, lim TCPLimits) *Listener {
	return &Listener{Listener: ln, lim: lim.withDefaults(), perSource: map[netip.Addr]int{}}
}

// sourceKey is what the per-source bound counts: the address, or for
// IPv6 its /64 (one client is given a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Accept returns the next connection within the limits; those over them
// are closed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc, ok := l.admit(c); ok {
			return lc, nil
		}
		c.Close()
	}
}

// Refused is how many connections were closed for being over the limits.
func (l *Listener) Refused() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused
}

func (l *Listener) admit(c net.Conn) (*limitedConn, bool) {
	var addr netip.Addr
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		addr = ta.AddrPort().Addr().Unmap()
	}
	trusted := addr.IsValid() && l.lim.Trusted != nil && l.lim.Trusted(addr)
	key := sourceKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case trusted && l.trusted < l.lim.TrustedMax:
		l.trusted++
	case !trusted && l.untrusted < l.lim.Max && l.perSource[key] < l.lim.PerSource:
		l.untrusted++
		l.perSource[key]++
	default:
		l.refused++
		return nil, false
	}
	return &limitedConn{Conn: c, l: l, trusted: trusted, key: key}, true
}

func (l *Listener) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.trusted {
		l.trusted--
		return
	}
	l.untrusted--
	if l.perSource[c.key]--; l.perSource[c.key] <= 0 {
		delete(l.perSource, c.key)
	}
}

// limitedConn gives its slot back when closed.
type limitedConn struct {
	net.Conn
	l       *Listener
	trusted bool
	key     netip.Addr
	queries int // read by the server's one goroutine for this connection
	once    sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c) })
	return c.Conn.Close()
}

// errQueryBound ends an untrusted connection that used up its queries.
var errQueryBound = errors.New("dnsserve: queries per connection used up")

// DecorateReader gives an untrusted connection the shorter idle timeout
// and ends it after its queries; use it as the DecorateReader of the TCP
// dns.Server (only: it reads no UDP).
func (l *Listener) DecorateReader(r dns.Reader) dns.Reader {
	return limitedReader{Reader: r, lim: l.lim}
}

type limitedReader struct {
	dns.Reader
	lim TCPLimits
}

func (r limitedReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	if c, ok := conn.(*limitedConn); ok && !c.trusted {
		if c.queries >= r.lim.MaxQueries {
			return nil, errQueryBound
		}
		c.queries++
		timeout = min(timeout, r.lim.Idle)
	}
	return r.Reader.ReadTCP(conn, timeout)
}
