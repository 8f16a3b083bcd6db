// Package prefixes reads the address lists of the config (allowlists,
// allowed peers): one set of rules for every list, in a package that
// imports nothing of mxguard, so that every front door can use it.
package prefixes

import (
	"fmt"
	"net/netip"
	"strings"
)

// Parse reads an entry: a CIDR ("192.0.2.0/24", host bits are masked
// off) or a bare address ("192.0.2.1", "2001:db8::1"). IPv4-mapped IPv6
// is turned into IPv4; zones are refused.
func Parse(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return Unmap(p).Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseList reads every entry; the error names the first bad one.
func ParseList(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Unmap turns an IPv4-mapped IPv6 prefix (::ffff:192.0.2.0/120) into the
// IPv4 prefix it stands for; other prefixes are returned as they are.
func Unmap(p netip.Prefix) netip.Prefix {
	if !p.IsValid() || !p.Addr().Is4In6() || p.Bits() < 96 {
		return p
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
}
