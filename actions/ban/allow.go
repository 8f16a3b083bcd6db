package ban

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/mxguard/mxguard/internal/prefixes"
)

// allowLoopback is always allowlisted, whatever the configuration.
var allowLoopback = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// Allowlist holds the networks that are never banned: loopback (always),
// the configured CIDRs, the host's own addresses and any extra source.
// A ban is refused when its prefix overlaps any of them, so a ban of
// 203.0.113.0/24 is refused when 203.0.113.5 is allowlisted.
type Allowlist struct {
	static []netip.Prefix
	// Dynamic sources, re-read by Refresh.
	sources []func() ([]netip.Prefix, error)

	mu       sync.RWMutex
	dynamic  []netip.Prefix
	lastGood [][]netip.Prefix // per source, its last successful answer
}

// HostAddrs returns the host's own addresses (one /32 or /128 each,
// not the whole attached subnet) from net.InterfaceAddrs.
func HostAddrs() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		var ip net.IP
		switch v := a.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		default:
			continue
		}
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		addr = addr.Unmap()
		out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
	}
	return out, nil
}

// ParseAllowEntry parses an allowlist entry (see prefixes.Parse).
func ParseAllowEntry(s string) (netip.Prefix, error) {
	p, err := prefixes.Parse(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("allowlist entry %w", err)
	}
	return p, nil
}

// NewAllowlist builds an allowlist from configured entries (see ParseAllowEntry)
// plus loopback plus the prefixes returned by each source (typically
// HostAddrs). Sources are read now and again on every Refresh; a
// source error is returned (with the list still usable with what was
// read). All bad entries are reported together.
func NewAllowlist(entries []string, sources ...func() ([]netip.Prefix, error)) (*Allowlist, error) {
	a := &Allowlist{static: append([]netip.Prefix(nil), allowLoopback...)}
	var errs []error
	for _, e := range entries {
		p, err := ParseAllowEntry(e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		a.static = append(a.static, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, s := range sources {
		if s != nil {
			a.sources = append(a.sources, s)
		}
	}
	return a, a.Refresh()
}

// Refresh re-reads the dynamic sources (host addresses change with DHCP,
// interfaces coming up). A source that fails keeps its last good
// prefixes, so a transient error (netlink, no free file descriptor during
// a connection flood) never shrinks the allowlist; the errors are returned.
func (a *Allowlist) Refresh() error {
	var errs []error
	a.mu.Lock()
	if len(a.lastGood) != len(a.sources) {
		a.lastGood = make([][]netip.Prefix, len(a.sources))
	}
	a.mu.Unlock()
	fresh := make([][]netip.Prefix, len(a.sources))
	ok := make([]bool, len(a.sources))
	for i, s := range a.sources {
		ps, err := s()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ok[i] = true
		for _, p := range ps {
			if p.IsValid() {
				fresh[i] = append(fresh[i], prefixes.Unmap(p).Masked())
			}
		}
	}
	a.mu.Lock()
	var dyn []netip.Prefix
	for i := range a.sources {
		if ok[i] {
			a.lastGood[i] = fresh[i]
		}
		dyn = append(dyn, a.lastGood[i]...)
	}
	a.dynamic = dyn
	a.mu.Unlock()
	return errors.Join(errs...)
}

// Contains reports whether p overlaps any allowlisted network. An invalid
// prefix is reported as contained (never ban what cannot be checked).
func (a *Allowlist) Contains(p netip.Prefix) bool {
	if !p.IsValid() {
		return true
	}
	p = prefixes.Unmap(p).Masked()
	for _, q := range a.static {
		if q.Overlaps(p) {
			return true
		}
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, q := range a.dynamic {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

// Prefixes returns every allowlisted network (static first).
func (a *Allowlist) Prefixes() []netip.Prefix {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return append(append([]netip.Prefix(nil), a.static...), a.dynamic...)
}

// tooBroad reports whether p is broader than the limits (/maxV4 for
// IPv4, /maxV6 for IPv6).
func tooBroad(p netip.Prefix, maxV4, maxV6 int) bool {
	if p.Addr().Is4() {
		return p.Bits() < maxV4
	}
	return p.Bits() < maxV6
}
