package peers

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Skip reasons: why a name of a peer's zone is not mirrored. They are the
// keys of Status.Skipped and of the metrics.
const (
	SkipGarbage   = "garbage"   // not reversed octets or nibbles under the zone
	SkipRange     = "range"     // an octet above 255, a label that is no nibble
	SkipTest      = "test"      // RFC 5782 test entries (127.0.0.2, ::ffff:127.0.0.2, ::2) and 127/8
	SkipInvalid   = "invalid"   // unspecified, multicast, link-local, broadcast, 0/8, mapped
	SkipNoA       = "no_a"      // no A record, or one outside 127.0.0.0/8
	SkipAllowlist = "allowlist" // the local allowlist covers it
	SkipTooBroad  = "too_broad" // wider than ban.max_prefix_v4/v6
	SkipOver      = "over"      // its until is already past
	SkipCovered   = "covered"   // a wildcard that repeats the broader listing above it
)

// ErrSkip is wrapped by every ParseName error; its Reason is one of the
// Skip constants.
type ErrSkip struct {
	Reason string
	Why    string
}

func (e *ErrSkip) Error() string { return e.Reason + ": " + e.Why }

func skip(reason, why string) error { return &ErrSkip{Reason: reason, Why: why} }

// SkipReason is the Skip constant of err (SkipGarbage for any other error).
func SkipReason(err error) string {
	var s *ErrSkip
	if errors.As(err, &s) {
		return s.Reason
	}
	return SkipGarbage
}

// ParseName turns an owner name of the zone into the prefix it lists:
// reversed octets (4.3.2.1.zone = 1.2.3.4/32) or nibbles (32 labels =
// an IPv6 /128), and a leading "*" label for a prefix at an octet or
// nibble boundary (*.3.2.1.zone = 1.2.3.0/24; * and 1–3 octets is IPv4,
// * and 4–31 nibbles IPv6). name and zone are fully qualified; case does
// not matter. Test entries (127/8 and its IPv4-mapped form) and
// addresses no client can have are refused.
func ParseName(name, zone string) (netip.Prefix, error) {
	name, zone = strings.ToLower(name), strings.ToLower(zone) // DNS names ignore case
	if len(name) <= len(zone) || !strings.HasSuffix(name, zone) || name[len(name)-len(zone)-1] != '.' {
		return netip.Prefix{}, skip(SkipGarbage, "not a name under the zone")
	}
	rel := name[:len(name)-len(zone)-1]
	labels := strings.Split(rel, ".")
	wild := labels[0] == "*"
	if wild {
		labels = labels[1:]
	}
	n := len(labels)
	switch {
	case !wild && n == 4, wild && n >= 1 && n <= 3:
		return parseV4(labels, wild)
	case !wild && n == 32, wild && n >= 4 && n <= 31:
		return parseV6(labels)
	}
	return netip.Prefix{}, skip(SkipGarbage, strconv.Itoa(n)+" labels: want 4 octets or 32 nibbles, or * and fewer")
}

func parseV4(labels []string, wild bool) (netip.Prefix, error) {
	var a [4]byte
	for i, l := range labels {
		if l == "" || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
			return netip.Prefix{}, skip(SkipGarbage, "label "+strconv.Quote(l)+" is no octet")
		}
		v := 0
		for _, c := range []byte(l) {
			if c < '0' || c > '9' { // Atoi would take "-1" and "+1"
				return netip.Prefix{}, skip(SkipGarbage, "label "+strconv.Quote(l)+" is no octet")
			}
			v = 10*v + int(c-'0')
		}
		if v > 255 {
			return netip.Prefix{}, skip(SkipRange, "octet "+l+" is above 255")
		}
		a[len(labels)-1-i] = byte(v)
	}
	bits := 32
	if wild {
		bits = 8 * len(labels)
	}
	return checkAddr(netip.PrefixFrom(netip.AddrFrom4(a), bits))
}

func parseV6(labels []string) (netip.Prefix, error) {
	var a [16]byte
	for i, l := range labels {
		if len(l) != 1 {
			return netip.Prefix{}, skip(SkipRange, "label "+strconv.Quote(l)+" is no nibble")
		}
		v, err := strconv.ParseUint(l, 16, 8)
		if err != nil {
			return netip.Prefix{}, skip(SkipRange, "label "+strconv.Quote(l)+" is no nibble")
		}
		nib := len(labels) - 1 - i // position from the left
		if nib%2 == 0 {
			a[nib/2] |= byte(v) << 4
		} else {
			a[nib/2] |= byte(v)
		}
	}
	return checkAddr(netip.PrefixFrom(netip.AddrFrom16(a), 4*len(labels)))
}

// ipv6TestEntry is the IPv6 test entry DNSBL clients probe and mxguard's
// publisher lists (RFC 5782's own is ::ffff:127.0.0.2).
var ipv6TestEntry = netip.MustParsePrefix("::2/128")

// checkAddr refuses the test entries and what no client can be.
func checkAddr(p netip.Prefix) (netip.Prefix, error) {
	a := p.Addr()
	if a.Is4In6() {
		if a.Unmap().IsLoopback() {
			return netip.Prefix{}, skip(SkipTest, "RFC 5782 test entry "+p.String())
		}
		return netip.Prefix{}, skip(SkipInvalid, p.String()+" is IPv4-mapped: list the IPv4 address")
	}
	if a.Is4() && a.IsLoopback() {
		return netip.Prefix{}, skip(SkipTest, "RFC 5782 test entry or loopback "+p.String())
	}
	if p == ipv6TestEntry {
		return netip.Prefix{}, skip(SkipTest, "IPv6 test entry "+p.String())
	}
	switch {
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(),
		a.IsInterfaceLocalMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}),
		a.Is4() && a.As4()[0] == 0, a.Is4() && a.As4()[0] >= 224:
		return netip.Prefix{}, skip(SkipInvalid, p.String()+" is no client address")
	}
	if a.Is6() && p.Bits() == 128 && a.As16()[0] == 0 { // ::/8 holds only special addresses
		return netip.Prefix{}, skip(SkipInvalid, p.String()+" is no client address")
	}
	return p, nil
}

// Entry is one listing of a peer's zone.
type Entry struct {
	Prefix   netip.Prefix
	Code     byte      // the A record's last octet (127.0.0.CODE)
	Detector string    // from the TXT record, "" if it has none in the agreed form
	Reason   string    // from the TXT record (the whole text if not in the agreed form)
	Until    time.Time // from the TXT record; zero if none
}

// maxReason bounds the reason kept of a TXT record (it reaches logs,
// `list` and the Postfix access map).
const maxReason = 200

// ParseTXT reads the agreed TXT form, "<detector>: <short reason>; until
// <RFC 3339 UTC>". Any other text is kept whole as the reason, without a
// detector or until. Control characters are replaced and the text is
// bounded, since it reaches log lines and map files.
func ParseTXT(txt string) (detector, reason string, until time.Time) {
	txt = cleanText(txt)
	body := txt
	if i := strings.LastIndex(txt, "; until "); i >= 0 {
		if t, err := time.Parse(time.RFC3339, strings.TrimSpace(txt[i+len("; until "):])); err == nil {
			until, body = t.UTC(), txt[:i]
		}
	}
	if d, r, ok := strings.Cut(body, ": "); ok && isDetectorName(d) && !until.IsZero() {
		return d, bound(strings.TrimSpace(r)), until
	}
	return "", bound(strings.TrimSpace(body)), until
}

func isDetectorName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == ':' || r == '.') {
			return false
		}
	}
	return true
}

func cleanText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
}

func bound(s string) string {
	if len(s) <= maxReason {
		return s
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
