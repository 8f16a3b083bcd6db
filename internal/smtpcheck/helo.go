package smtpcheck

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mxguard/mxguard/internal/event"
)

// HeloProblem is what is wrong with a HELO name: which check found it
// ("helo_deny" or "helo_fqdn"), the Postfix-like reply and its reason.
type HeloProblem struct {
	Check  string       // "helo_deny", "helo_fqdn"; "" = nothing wrong
	Reply  string       // "554 5.7.1 <name>: Helo command rejected: Access denied"
	Reason event.Reason // ReasonHeloAccess, ReasonHeloInvalid, ReasonHeloNonFQDN
}

// HeloName is the form of a HELO name (or a name to deny) the deny list
// holds and is looked up by: lower case, no trailing dot, so that
// "Localhost." in the config and "localhost" from a client meet.
func HeloName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// CheckHelo judges a HELO/EHLO name. deny holds the names (HeloName)
// nobody may use (our own hostname among them); with checkDeny or
// checkFQDN false that check is skipped. quoted is the name as the reply
// shows it (already made safe for logs).
func CheckHelo(name, quoted string, deny map[string]bool, checkDeny, checkFQDN bool) HeloProblem {
	q := "<" + quoted + ">"
	if checkDeny && deny[HeloName(name)] {
		return HeloProblem{"helo_deny", "554 5.7.1 " + q + ": Helo command rejected: Access denied", event.ReasonHeloAccess}
	}
	if !checkFQDN {
		return HeloProblem{}
	}
	switch heloSyntax(name) {
	case event.ReasonHeloInvalid:
		return HeloProblem{"helo_fqdn", "501 5.5.2 " + q + ": Helo command rejected: Invalid name", event.ReasonHeloInvalid}
	case event.ReasonHeloNonFQDN:
		return HeloProblem{"helo_fqdn", "504 5.5.2 " + q + ": Helo command rejected: need fully-qualified hostname", event.ReasonHeloNonFQDN}
	}
	return HeloProblem{}
}

// heloSyntax is ReasonHeloInvalid, ReasonHeloNonFQDN or ReasonNone for a
// HELO name; it does not allocate.
func heloSyntax(name string) event.Reason {
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		lit := strings.TrimPrefix(name[1:len(name)-1], "IPv6:")
		if _, err := netip.ParseAddr(lit); err != nil {
			return event.ReasonHeloInvalid
		}
		return event.ReasonNone
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return event.ReasonHeloNonFQDN
	}
	if !ValidDomain(name) {
		return event.ReasonHeloInvalid
	}
	if !strings.Contains(strings.TrimSuffix(name, "."), ".") {
		return event.ReasonHeloNonFQDN
	}
	return event.ReasonNone
}

// HeloSyntax is CheckHelo's FQDN check alone, without a reply text.
func HeloSyntax(name string) event.Reason { return heloSyntax(name) }

// ValidDomain checks LDH labels separated by dots (no trailing dot
// needed); it does not require a dot.
func ValidDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Site is one DNSBL zone with its weight and the answers that count as
// a listing.
type Site struct {
	Zone   string
	Weight int
	// Match: the answers that are listings, one set of values per octet
	// (bit v of word v/64); nil = the default, 127.0.0.0/24.
	Match *[4][4]uint64
}

// Listed reports whether answer a is a listing at this site. Answers
// in 127.255.255.0/24 never are: DNSBLs (Spamhaus 127.255.255.252/254/255)
// use them for errors such as a query through a public resolver.
func (s Site) Listed(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() {
		return false
	}
	o := a.As4()
	if o[0] == 127 && o[1] == 255 && o[2] == 255 {
		return false
	}
	if s.Match == nil {
		return o[0] == 127 && o[1] == 0 && o[2] == 0
	}
	for i, v := range o {
		if s.Match[i][v/64]&(1<<(v%64)) == 0 {
			return false
		}
	}
	return true
}

// ParseSite reads "zone", "zone*N", "zone=PATTERN" or "zone=PATTERN*N"
// (Postfix's postscreen_dnsbl_sites syntax): PATTERN is four octets, each
// a number or a bracketed list of numbers and ranges, as in
// zen.spamhaus.org=127.0.0.[2..11]*3 or bl.example=127.0.0.[2;4;10..12].
// Without a pattern 127.0.0.0/24 is a listing.
func ParseSite(s string) (Site, error) {
	rest, w, ok := strings.Cut(strings.TrimSpace(s), "*")
	zone, pattern, hasPattern := strings.Cut(rest, "=")
	site := Site{Zone: strings.TrimSuffix(strings.ToLower(zone), "."), Weight: 1}
	if ok {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 {
			return site, fmt.Errorf("bad weight %q (want zone*N, N ≥ 1)", w)
		}
		site.Weight = n
	}
	if site.Zone == "" || !ValidDomain(site.Zone) {
		return site, fmt.Errorf("bad zone %q", zone)
	}
	if hasPattern {
		m, err := parseAnswerPattern(pattern)
		if err != nil {
			return site, fmt.Errorf("%s: bad answer pattern %q: %w", site.Zone, pattern, err)
		}
		site.Match = m
	}
	return site, nil
}

// parseAnswerPattern reads d.d.d.d where each d is N or [LIST], LIST
// being N or N..M items separated by ';'.
func parseAnswerPattern(p string) (*[4][4]uint64, error) {
	var m [4][4]uint64
	octets := strings.Split(p, ".")
	// a bracket may hold "..": join the pieces of one octet again
	var parts []string
	for i := 0; i < len(octets); i++ {
		part := octets[i]
		for strings.HasPrefix(part, "[") && !strings.HasSuffix(part, "]") && i+1 < len(octets) {
			i++
			part += "." + octets[i]
		}
		parts = append(parts, part)
	}
	if len(parts) != 4 {
		return nil, errors.New("want four octets")
	}
	num := func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 255 {
			return 0, fmt.Errorf("%q is not an octet", s)
		}
		return n, nil
	}
	for i, part := range parts {
		items := []string{part}
		if strings.HasPrefix(part, "[") && strings.HasSuffix(part, "]") {
			items = strings.Split(part[1:len(part)-1], ";")
		}
		for _, it := range items {
			lo, hi, isRange := strings.Cut(it, "..")
			a, err := num(lo)
			if err != nil {
				return nil, err
			}
			b := a
			if isRange {
				if b, err = num(hi); err != nil {
					return nil, err
				}
				if b < a {
					return nil, fmt.Errorf("range %s is backwards", it)
				}
			}
			for v := a; v <= b; v++ {
				m[i][v/64] |= 1 << (v % 64)
			}
		}
	}
	return &m, nil
}
