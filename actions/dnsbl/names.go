package dnsbl

import (
	"net/netip"
	"strings"
)

// Query names (RFC 5782): an IPv4 address is its four octets reversed
// (192.0.2.99 → 99.2.0.192.zone), an IPv6 address its 32 nibbles reversed.
// A prefix on a label boundary (/8, /16, /24; a multiple of 4 bits for
// IPv6) is named by its labels alone; it is what a wildcard in the
// transferred zone hangs from.

const hexDigits = "0123456789abcdef"

// unitBits is the bits one label stands for.
func unitBits(a netip.Addr) int {
	if a.Is4() {
		return 8
	}
	return 4
}

// prefixLabels returns the labels of a prefix on a label boundary, most
// specific first, joined with dots ("3.2.1" for 1.2.3.0/24).
func prefixLabels(p netip.Prefix) string {
	var b strings.Builder
	if p.Addr().Is4() {
		a := p.Addr().As4()
		for i := p.Bits()/8 - 1; i >= 0; i-- {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			writeDecimal(&b, a[i])
		}
		return b.String()
	}
	a := p.Addr().As16()
	b.Grow(p.Bits() / 2)
	for i := p.Bits()/4 - 1; i >= 0; i-- {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		n := a[i/2]
		if i%2 == 0 {
			n >>= 4
		}
		b.WriteByte(hexDigits[n&0xf])
	}
	return b.String()
}

func writeDecimal(b *strings.Builder, n byte) {
	switch {
	case n >= 100:
		b.WriteByte('0' + n/100)
		b.WriteByte('0' + n/10%10)
	case n >= 10:
		b.WriteByte('0' + n/10)
	}
	b.WriteByte('0' + n%10)
}

// nodeName is the owner name of a prefix on a label boundary in zone
// (zone fully qualified, lower case, e.g. "bl.example.").
func nodeName(p netip.Prefix, zone string) string {
	return prefixLabels(p) + "." + zone
}

// queryName is the name a DNSBL client asks for address a.
func queryName(a netip.Addr, zone string) string {
	return nodeName(netip.PrefixFrom(a, a.BitLen()), zone)
}

// ParseQueryName turns a name inside zone into the prefix it names: four
// decimal labels are an IPv4 address, 32 hex nibbles an IPv6 address
// (full is true); fewer labels of one of these forms are the prefix on
// that label boundary (IPv4 when every label is a decimal octet, full
// false). ok is false for the apex and for names that are neither.
// Both names are compared without regard to case; zone is fully
// qualified.
func ParseQueryName(name, zone string) (p netip.Prefix, full, ok bool) {
	if len(name) <= len(zone) || !strings.EqualFold(name[len(name)-len(zone):], zone) || name[len(name)-len(zone)-1] != '.' {
		return netip.Prefix{}, false, false
	}
	rel := name[:len(name)-len(zone)-1]
	n := strings.Count(rel, ".") + 1
	if n <= 4 {
		if p, ok := parseV4Labels(rel, n); ok {
			return p, n == 4, true
		}
	}
	if n <= 32 {
		if p, ok := parseV6Labels(rel, n); ok {
			return p, n == 32, true
		}
	}
	return netip.Prefix{}, false, false
}

func parseV4Labels(rel string, n int) (netip.Prefix, bool) {
	var a [4]byte
	i := n - 1
	for label := range strings.SplitSeq(rel, ".") {
		if len(label) == 0 || len(label) > 3 || (len(label) > 1 && label[0] == '0') {
			return netip.Prefix{}, false
		}
		v := 0
		for j := 0; j < len(label); j++ {
			c := label[j]
			if c < '0' || c > '9' {
				return netip.Prefix{}, false
			}
			v = v*10 + int(c-'0')
		}
		if v > 255 {
			return netip.Prefix{}, false
		}
		a[i] = byte(v)
		i--
	}
	return netip.PrefixFrom(netip.AddrFrom4(a), n*8), true
}

func parseV6Labels(rel string, n int) (netip.Prefix, bool) {
	var a [16]byte
	i := n - 1
	for label := range strings.SplitSeq(rel, ".") {
		if len(label) != 1 {
			return netip.Prefix{}, false
		}
		v := strings.IndexByte(hexDigits, lower(label[0]))
		if v < 0 {
			return netip.Prefix{}, false
		}
		if i%2 == 0 {
			a[i/2] |= byte(v) << 4
		} else {
			a[i/2] |= byte(v)
		}
		i--
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), n*4), true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
