// Package smtpcheck holds the client checks the inline SMTP guard and the
// policy service share: HELO names, DNSBL scores and forward-confirmed
// reverse DNS, with one caching resolver.
package smtpcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ErrNotFound is returned by a Resolver for NXDOMAIN or an empty answer.
var ErrNotFound = errors.New("smtpcheck: name not found")

// Resolver answers the DNS questions of the checks. Any error other than
// ErrNotFound is a temporary failure.
type Resolver interface {
	// LookupAddr returns the A (and, if v6, AAAA) addresses of name.
	LookupIP(ctx context.Context, name string, v6 bool) ([]netip.Addr, error)
	// LookupMX returns the MX host names of name.
	LookupMX(ctx context.Context, name string) ([]string, error)
	// LookupAddr returns the PTR names of a (lower case, no trailing dot).
	LookupAddr(ctx context.Context, a netip.Addr) ([]string, error)
}

// dnsResolver asks one DNS server with github.com/miekg/dns and caches
// answers (positive and negative) for min(TTL, maxTTL).
type dnsResolver struct {
	server string
	client *dns.Client
	maxTTL time.Duration

	mu    sync.Mutex
	cache map[dnsKey]dnsEntry
}

type dnsKey struct {
	name  string
	qtype uint16
}

type dnsEntry struct {
	rrs     []dns.RR
	err     error
	expires time.Time
}

const dnsCacheMax = 50000

// tempFailTTL is how long a failed lookup (timeout, SERVFAIL, REFUSED)
// is remembered: while the DNS server is down, each request would
// otherwise wait the whole DNS budget again; the checks let the client
// through on a failure, so remembering one errs toward letting mail in.
const tempFailTTL = 30 * time.Second

// DefaultResolverAddr returns the first nameserver of /etc/resolv.conf.
func DefaultResolverAddr() string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return "127.0.0.1:53"
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port)
}

// NewResolver asks server (host:port) over UDP and caches answers for
// min(TTL, maxTTL); share one between the front doors, so that they share
// the cache.
func NewResolver(server string, timeout, maxTTL time.Duration) Resolver {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &dnsResolver{
		server: server,
		client: &dns.Client{Net: "udp", Timeout: timeout},
		maxTTL: maxTTL,
		cache:  make(map[dnsKey]dnsEntry),
	}
}

func (r *dnsResolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	key := dnsKey{dns.Fqdn(strings.ToLower(name)), qtype}
	now := time.Now()
	r.mu.Lock()
	if e, ok := r.cache[key]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.rrs, e.err
	}
	r.mu.Unlock()

	// a budget already spent by other lookups says nothing about DNS:
	// neither ask nor remember anything
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dns %s %s: %w", key.name, dns.TypeToString[qtype], err)
	}
	// a timeout is the server's fault only when the lookup had a fair
	// share of the client timeout; a nearly spent budget is the caller's
	fairChance := true
	if deadline, ok := ctx.Deadline(); ok && deadline.Sub(now) < r.client.Timeout/2 {
		fairChance = false
	}

	m := new(dns.Msg)
	m.SetQuestion(key.name, qtype)
	m.RecursionDesired = true
	in, _, err := r.client.ExchangeContext(ctx, m, r.server)
	if err != nil {
		err = fmt.Errorf("dns %s %s: %w", key.name, dns.TypeToString[qtype], err)
		// the caller gave up: says nothing about DNS
		if !errors.Is(err, context.Canceled) && (fairChance || !isTimeout(err)) {
			r.store(key, nil, err, now, min(tempFailTTL, r.maxTTL))
		}
		return nil, err
	}
	var rrs []dns.RR
	ttl := r.maxTTL
	switch in.Rcode {
	case dns.RcodeSuccess:
		for _, rr := range in.Answer {
			if rr.Header().Rrtype == qtype {
				rrs = append(rrs, rr)
				if t := time.Duration(rr.Header().Ttl) * time.Second; t < ttl {
					ttl = t
				}
			}
		}
		if len(rrs) == 0 {
			err = ErrNotFound
		}
	case dns.RcodeNameError:
		err = ErrNotFound
	default:
		// SERVFAIL, REFUSED: temporary, remembered briefly
		err := fmt.Errorf("dns %s %s: %s", key.name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode])
		r.store(key, nil, err, now, min(tempFailTTL, r.maxTTL))
		return nil, err
	}
	r.store(key, rrs, err, now, ttl)
	return rrs, err
}

// store caches an answer for ttl (nothing when ttl ≤ 0).
func (r *dnsResolver) store(key dnsKey, rrs []dns.RR, err error, now time.Time, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= dnsCacheMax {
		for k, e := range r.cache { // drop expired, else everything
			if !now.Before(e.expires) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= dnsCacheMax {
			clear(r.cache)
		}
	}
	r.cache[key] = dnsEntry{rrs: rrs, err: err, expires: now.Add(ttl)}
}

func (r *dnsResolver) LookupIP(ctx context.Context, name string, v6 bool) ([]netip.Addr, error) {
	var out []netip.Addr
	rrs, err := r.query(ctx, name, dns.TypeA)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	for _, rr := range rrs {
		if a, ok := netip.AddrFromSlice(rr.(*dns.A).A.To4()); ok {
			out = append(out, a)
		}
	}
	if v6 {
		rrs, err6 := r.query(ctx, name, dns.TypeAAAA)
		if err6 != nil && !errors.Is(err6, ErrNotFound) {
			return nil, err6
		}
		for _, rr := range rrs {
			if a, ok := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA); ok {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

func (r *dnsResolver) LookupMX(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.MX).Mx)
	}
	return out, nil
}

func (r *dnsResolver) LookupAddr(ctx context.Context, a netip.Addr) ([]string, error) {
	zone := "in-addr.arpa"
	if a.Unmap().Is6() {
		zone = "ip6.arpa"
	}
	rrs, err := r.query(ctx, ReverseName(a, zone), dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.ToLower(strings.TrimSuffix(rr.(*dns.PTR).Ptr, ".")))
	}
	return out, nil
}

// fcrdnsMaxNames bounds the forward lookups per client (Postfix asks
// about all names; a client with many PTRs should not cost many queries).
const fcrdnsMaxNames = 5

// FCrDNS returns the forward-confirmed reverse DNS name of a: a PTR name
// (of the first fcrdnsMaxNames) whose A/AAAA records include a. It
// returns ErrNotFound when there is no PTR or none confirms, and another
// error when a lookup failed and no name was confirmed.
func FCrDNS(ctx context.Context, r Resolver, a netip.Addr) (string, error) {
	a = a.Unmap()
	names, err := r.LookupAddr(ctx, a)
	if err != nil {
		return "", err
	}
	var tempErr error
	for i, n := range names {
		if i == fcrdnsMaxNames {
			break
		}
		if !ValidDomain(n) {
			continue
		}
		ips, err := r.LookupIP(ctx, n, a.Is6())
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				tempErr = err
			}
			continue
		}
		for _, ip := range ips {
			if ip.Unmap() == a {
				return n, nil
			}
		}
	}
	if tempErr != nil {
		return "", tempErr
	}
	return "", ErrNotFound
}

// ReverseName returns the DNSBL query name of a under zone:
// 2.0.0.127.zen.example for 127.0.0.2, nibbles for IPv6.
func ReverseName(a netip.Addr, zone string) string {
	a = a.Unmap()
	var b strings.Builder
	if a.Is4() {
		v := a.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", v[3], v[2], v[1], v[0])
	} else {
		v := a.As16()
		const hex = "0123456789abcdef"
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[v[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[v[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	return b.String()
}

// DNSBLScore asks every site in parallel and returns the summed weight
// of the sites that list a (an answer the site's Match accepts, by
// default in 127.0.0.0/24), and their zones. Lookups that fail or time
// out, and a DNSBL's error answers (127.255.255.0/24), count as not
// listed.
func DNSBLScore(ctx context.Context, r Resolver, sites []Site, a netip.Addr, timeout time.Duration) (int, []string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type res struct {
		i      int
		listed bool
	}
	ch := make(chan res, len(sites))
	for i, s := range sites {
		go func() {
			ips, err := r.LookupIP(ctx, ReverseName(a, s.Zone), false)
			listed := false
			if err == nil {
				for _, ip := range ips {
					if s.Listed(ip) {
						listed = true
					}
				}
			}
			ch <- res{i, listed}
		}()
	}
	score := 0
	var zones []string
	for range sites {
		x := <-ch
		if x.listed {
			score += sites[x.i].Weight
			zones = append(zones, sites[x.i].Zone)
		}
	}
	return score, zones
}

// isTimeout reports whether err is a deadline passing rather than an
// answer or a refused connection.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
