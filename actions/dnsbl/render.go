package dnsbl

import (
	"math/bits"
	"net/netip"
	"slices"

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
	// placeholder records carry a TXT only (see placeholders).
	placeholder bool
	// node is the boundary prefix the name belongs to (for a placeholder:
	// the prefix carrying the wildcard it stops).
	node netip.Prefix
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
	if len(bans) == 1 && bans[0].Prefix.Bits()%u == 0 && !(bans[0].Prefix.Bits() < full && sharedWithIPv6(bans[0].Prefix)) {
		// The common case: one ban on a label boundary is one name.
		b := bans[0]
		if b.Prefix.Bits() == full {
			return []record{{name: prefixLabels(b.Prefix), ban: b, node: b.Prefix}}
		}
		name := "*"
		if b.Prefix.Bits() > 0 {
			name += "." + prefixLabels(b.Prefix)
		}
		return []record{{name: name, ban: b, node: b.Prefix}}
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
	if regionBits%8 == 0 && bans[0].Prefix.Addr().Is4() {
		for n := range nodes {
			if _, wild := longestCovering(broad, n); wild && sharedWithIPv6(n) {
				spellOutDigits(nodes, n)
			}
		}
	}
	out := make([]record, 0, len(nodes))
	for n := range nodes {
		if n.Addr().Is4() && n.Bits() < 32 && sharedWithIPv6(n) {
			if _, wild := longestCovering(broad, n); wild {
				out = append(out, placeholders(n)...)
			}
		}
		if n.Bits() == full {
			best, ok := exact[n]
			if !ok {
				best, ok = longestCovering(broad, n)
			}
			if ok {
				out = append(out, record{name: prefixLabels(n), ban: best, node: n})
			}
			continue
		}
		if best, ok := longestCovering(broad, n); ok {
			name := "*"
			if n.Bits() > 0 {
				name += "." + prefixLabels(n)
			}
			out = append(out, record{name: name, ban: best, node: n})
		}
	}
	return out
}

// maxScopes is the most changed prefixes of one region rendered on their
// own; more (a Sync, a sweep) render the whole region.
const maxScopes = 8

// renderScoped adds to out the records of a region's bans whose names lie
// on the paths of the changed prefixes (scopes): the names at or below a
// changed prefix and above it up to the region. Those are all the records
// a change of those prefixes can alter: a name's record depends on
// whether it exists (some ban at or below it) and on the bans containing
// it. The bans that overlap a scope decide all but the existence of the
// names above it, for which the ban sharing the longest path with the
// scope stands in for the others.
func renderScoped(out map[string]record, bans []ban.Ban, regionBits int, scopes []netip.Prefix) {
	if len(scopes) > maxScopes || len(bans) <= 4*maxScopes {
		for _, rec := range renderRegion(bans, regionBits) {
			out[rec.name] = rec
		}
		return
	}
	var some []ban.Ban
	witness := make([]int, len(scopes)) // per scope: the other ban reaching deepest
	reach := make([]int, len(scopes))
	for i := range witness {
		witness[i], reach[i] = -1, -1
	}
	for bi, b := range bans {
		overlaps := false
		for si, sc := range scopes {
			if b.Prefix.Overlaps(sc) {
				overlaps = true
				continue
			}
			// b makes the names above sc exist down to the path they share
			if r := min(commonBits(b.Prefix.Addr(), sc.Addr()), boundaryDepthBits(b.Prefix)); r > reach[si] {
				witness[si], reach[si] = bi, r
			}
		}
		if overlaps {
			some = append(some, b)
		}
	}
	for _, w := range witness {
		if w >= 0 && !slices.ContainsFunc(some, func(b ban.Ban) bool { return b.Prefix == bans[w].Prefix }) {
			some = append(some, bans[w])
		}
	}
	for _, rec := range renderRegion(some, regionBits) {
		for _, sc := range scopes {
			if rec.node.Overlaps(sc) {
				out[rec.name] = rec
				break
			}
		}
	}
}

// commonBits is the length of the prefix a and b (one family) share.
func commonBits(a, b netip.Addr) int {
	x, y := a.As16(), b.As16()
	n := 0
	for i := range x {
		if d := x[i] ^ y[i]; d != 0 {
			n += bits.LeadingZeros8(d)
			break
		}
		n += 8
	}
	if a.Is4() {
		n -= 96
	}
	return n
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

// One zone holds both families (RFC 5782 consumers ask one zone), and an
// IPv4 name whose labels are all single digits ("0.6.2" for 2.6.0.0/24)
// is also an IPv6 nibble path (2600::/12). A wildcard there would answer
// every IPv6 address below the path (RFC 4592), and an IPv6 listing below
// it would make the IPv4 names on its path exist, so that the wildcard no
// longer answers them (NODATA). So below such a wildcard every label both
// families share (0-9) is spelled out: the full address by its own
// record, a shorter prefix by its own wildcard under the same rule; the
// labels only IPv6 has (a-f) get a placeholder name below them, so that
// they exist and the wildcard cannot synthesize them or anything under them.

// placeholderLabel is the label of a placeholder name: no query name has it.
const placeholderLabel = "_"

// placeholderText is the TXT of a placeholder name.
const placeholderText = "not listed: keeps an IPv4 wildcard off IPv6 names"

// sharedWithIPv6 reports whether the name of IPv4 boundary prefix n is
// also an IPv6 nibble path: every octet is a single digit.
func sharedWithIPv6(n netip.Prefix) bool {
	if !n.Addr().Is4() {
		return false
	}
	a := n.Addr().As4()
	for i := 0; i < n.Bits()/8; i++ {
		if a[i] > 9 {
			return false
		}
	}
	return true
}

// spellOutDigits adds to nodes the single-digit children of IPv4 prefix
// n, and theirs down to full addresses.
func spellOutDigits(nodes map[netip.Prefix]struct{}, n netip.Prefix) {
	if n.Bits() >= 32 {
		return
	}
	a := n.Addr().As4()
	for d := byte(0); d <= 9; d++ {
		a[n.Bits()/8] = d
		c := netip.PrefixFrom(netip.AddrFrom4(a), n.Bits()+8)
		nodes[c] = struct{}{}
		spellOutDigits(nodes, c)
	}
}

// placeholders are the placeholder records below the IPv6-only children
// (a-f) of the name of IPv4 prefix n, which carries a wildcard.
func placeholders(n netip.Prefix) []record {
	out := make([]record, 0, 6)
	base := ""
	if n.Bits() > 0 {
		base = "." + prefixLabels(n)
	}
	for _, c := range hexDigits[10:] {
		out = append(out, record{name: placeholderLabel + "." + string(c) + base, placeholder: true, node: n})
	}
	return out
}

// spelledOut reports whether the name of IPv4 prefix n (below its region
// of regionBits) is spelled out below a wildcard (see sharedWithIPv6):
// its parent carries a wildcard and shares its name with IPv6.
func spelledOut(bans []ban.Ban, n netip.Prefix, regionBits int) bool {
	if !n.Addr().Is4() || n.Bits() <= regionBits || !sharedWithIPv6(n) {
		return false
	}
	parent, _ := n.Addr().Prefix(n.Bits() - 8)
	if _, covered := longestCovering(bans, parent); !covered {
		return false
	}
	return nodeExists(bans, parent) || spelledOut(bans, parent, regionBits)
}
