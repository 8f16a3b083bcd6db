package smtpcheck

import (
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

// CheckHelo judges a HELO/EHLO name. deny holds the lower-case names
// nobody may use (our own hostname among them); with checkDeny or
// checkFQDN false that check is skipped. quoted is the name as the reply
// shows it (already made safe for logs).
func CheckHelo(name, quoted string, deny map[string]bool, checkDeny, checkFQDN bool) HeloProblem {
	q := "<" + quoted + ">"
	if checkDeny && deny[strings.ToLower(strings.TrimSuffix(name, "."))] {
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

// Site is one DNSBL zone with its weight.
type Site struct {
	Zone   string
	Weight int
}

// ParseSite reads "zone" or "zone*N".
func ParseSite(s string) (Site, error) {
	zone, w, ok := strings.Cut(strings.TrimSpace(s), "*")
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
	return site, nil
}
