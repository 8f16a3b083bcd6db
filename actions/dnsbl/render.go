package dnsbl

import (
	"math/bits"
	"net/netip"

	"github.com/mxguard/mxguard/actions/ban"
)

// The transferred zone must give a secondary the answers the built-in
// server gives from its longest-prefix index. Every ban lies inside one
// region: the prefix on the label boundary at or above the broadest ban
// allowed (ban.max_prefix_v4/v6: a /24 region for IPv4 by default, a /48
// one for IPv6). A region's records depend only on the bans inside it,
// so a change re-renders one region and the difference of the two
// renderings is the IXFR change.
//
// Within a region, a ban of a prefix on a label boundary is a wildcard
// (*.3.2.1 for 1.2.3.0/24) or, for a full address, one name; a ban off
// the boundary is expanded into the boundary prefixes below it (a /23
// into two /24 wildcards). DNS wildcards stop at names that exist (RFC
// 4592): a /24 wildcard does not answer for 1.2.3.9 when 4.3.2.1 exists
// below it only if the names in between exist. So every name that
// exists between the region and a ban below it gets a wildcard of its own
// with the data of the longest ban covering it; a full name gets the data
// of the longest ban containing its address.

// maxExpansion bounds the boundary prefixes one ban expands into (a /17
// into 128 /24s is the most a label boundary allows).
const maxExpansion = 256

// record is one owner name of the rendered zone: labels relative to the
// zone ("*.3.2.1" or "4.3.2.1") and the ban whose data it carries.
type record struct {
	name string
	ban  ban.Ban
}

// regionOf returns the region of p for region widths v4Bits and v6Bits
// (on label boundaries), and false when p is broader than its region.
func regionOf(p netip.Prefix, v4Bits, v6Bits int) (netip.Prefix, bool) {
	rb := v6Bits
	if p.Addr().Is4() {
		rb = v4Bits
	}
	if p.Bits() < rb {
		return netip.Prefix{}, false
	}
	r, _ := p.Addr().Prefix(rb)
	return r, true
}

// regionBits is the region width for a max_prefix: the label boundary at
// or above it.
func regionBits(maxPrefix, unit int) int { return maxPrefix / unit * unit }

// boundaryDepthBits is the length of the boundary prefixes p expands into.
func boundaryDepthBits(p netip.Prefix) int {
	u := unitBits(p.Addr())
	return (p.Bits() + u - 1) / u * u
}

// expand calls fn for every boundary prefix p expands into.
func expand(p netip.Prefix, fn func(netip.Prefix)) {
	k := boundaryDepthBits(p)
	n := 1 << min(k-p.Bits(), bits.Len(maxExpansion)-1)
	a := p.Addr()
	for i := 0; i < n; i++ {
		fn(netip.PrefixFrom(a, k))
		a = nextPrefixAddr(a, k)
	}
}

// nextPrefixAddr adds 1 at bit position k (the last bit of a /k).
func nextPrefixAddr(a netip.Addr, k int) netip.Addr {
	b := a.AsSlice()
	i := k - 1
	for i >= 0 {
		byteI, bit := i/8, 7-i%8
		if b[byteI]&(1<<bit) == 0 {
			b[byteI] |= 1 << bit
			break
		}
		b[byteI] &^= 1 << bit
		i--
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

// renderRegion returns the records of the bans of one region (whose
// prefix has regionBits bits).
func renderRegion(bans []ban.Ban, regionBits int) []record {
	if len(bans) == 0 {
		return nil
	}
	full := bans[0].Prefix.Addr().BitLen()
	u := unitBits(bans[0].Prefix.Addr())
	if len(bans) == 1 && bans[0].Prefix.Bits()%u == 0 {
		// The common case: one ban on a label boundary is one name.
		b := bans[0]
		if b.Prefix.Bits() == full {
			return []record{{name: prefixLabels(b.Prefix), ban: b}}
		}
		name := "*"
		if b.Prefix.Bits() > 0 {
			name += "." + prefixLabels(b.Prefix)
		}
		return []record{{name: name, ban: b}}
	}
	exact := make(map[netip.Prefix]ban.Ban, len(bans))
	var broad []ban.Ban // bans that are not single addresses
	nodes := map[netip.Prefix]struct{}{}
	for _, b := range bans {
		exact[b.Prefix] = b
		if b.Prefix.Bits() < full {
			broad = append(broad, b)
		}
		expand(b.Prefix, func(n netip.Prefix) {
			for d := n.Bits(); d >= regionBits; d -= u {
				a, _ := n.Addr().Prefix(d)
				if _, seen := nodes[a]; seen {
					break // its ancestors are in already
				}
				nodes[a] = struct{}{}
			}
		})
	}
	out := make([]record, 0, len(nodes))
	for n := range nodes {
		if n.Bits() == full {
			best, ok := exact[n]
			if !ok {
				best, ok = longestCovering(broad, n)
			}
			if ok {
				out = append(out, record{name: prefixLabels(n), ban: best})
			}
			continue
		}
		if best, ok := longestCovering(broad, n); ok {
			name := "*"
			if n.Bits() > 0 {
				name += "." + prefixLabels(n)
			}
			out = append(out, record{name: name, ban: best})
		}
	}
	return out
}

// longestCovering returns the longest ban of bs whose prefix contains n.
func longestCovering(bs []ban.Ban, n netip.Prefix) (ban.Ban, bool) {
	var best ban.Ban
	found := false
	for _, b := range bs {
		if b.Prefix.Bits() <= n.Bits() && b.Prefix.Contains(n.Addr()) && (!found || b.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = b, true
		}
	}
	return best, found
}

// nodeExists reports whether the name of boundary prefix n exists in the
// rendered zone of a region's bans: some ban expands to a boundary
// prefix at or below it.
func nodeExists(bans []ban.Ban, n netip.Prefix) bool {
	for _, b := range bans {
		if boundaryDepthBits(b.Prefix) >= n.Bits() && b.Prefix.Overlaps(n) {
			return true
		}
	}
	return false
}
