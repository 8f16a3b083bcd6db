package dnsbl

import (
	"container/heap"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
)

// testDetector is the detector of the RFC 5782 test entries.
const testDetector = "test"

// testEntries are listed whatever is banned (RFC 5782 section 5):
// 127.0.0.2 and ::FFFF:7F00:2 are listed, 127.0.0.1 and ::1 are not. We
// list ::2, the IPv6 test entry DNSBL clients probe.
var testEntries = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.2/32"),
	netip.MustParsePrefix("::2/128"),
}

// foreverUntil is the expiry of the test entries.
var foreverUntil = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

func isTestEntry(p netip.Prefix) bool {
	for _, t := range testEntries {
		if p == t {
			return true
		}
	}
	return false
}

func testBan(p netip.Prefix) ban.Ban {
	return ban.Ban{Prefix: p, Detector: testDetector, Reason: "RFC 5782 test entry", Until: foreverUntil}
}

// change is what happened to one prefix: old and/or new listing.
type change struct {
	prefix   netip.Prefix
	old, new *ban.Ban
}

// journalEntry is one serial step, as IXFR sends it.
type journalEntry struct {
	from, to uint32
	del, add []dns.RR
}

// maxReasonLen keeps the TXT record well inside one 255-byte string.
const maxReasonLen = 100

// shortReason is the detector's reason made safe to publish: printable
// ASCII only, no address of any kind (a manual reason may name others),
// no characters that would need escaping in a TXT string or end the
// agreed "detector: reason; until T" form early.
func shortReason(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		core := strings.TrimRight(strings.TrimLeft(f, "([<{\"'"), ")]}>,.;:\"'")
		if core == "" {
			continue
		}
		_, perr := netip.ParsePrefix(core)
		_, aerr := netip.ParseAddr(core)
		if perr == nil || aerr == nil {
			fields[i] = strings.Replace(f, core, "[address]", 1)
		}
	}
	s = strings.Join(fields, " ")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == ';':
			return ','
		case r == '"' || r == '\\':
			return '\''
		case r > unicode.MaxASCII || !unicode.IsPrint(r):
			return '?'
		}
		return r
	}, s)
	if len(s) > maxReasonLen {
		s = s[:maxReasonLen-3] + "..."
	}
	return s
}

// txtOf is the agreed TXT text: "<detector>: <short reason>; until
// <RFC3339 UTC>", of a listing (whose detector and reason are clean).
func txtOf(b ban.Ban) string {
	return b.Detector + ": " + b.Reason + "; until " + b.Until.UTC().Format(time.RFC3339)
}

// expiryHeap orders the published prefixes by Until; entries whose
// listing changed since are skipped when popped.
type expiryItem struct {
	until  time.Time
	prefix netip.Prefix
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

var _ heap.Interface = (*expiryHeap)(nil)
