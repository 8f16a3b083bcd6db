package peers

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// zone is what is kept of a peer's zone: the A and TXT data of every
// owner name (other types, NS and the like, carry no listing), and the
// SOA. It is replaced by an AXFR and patched by an IXFR.
type zone struct {
	origin string
	soa    *dns.SOA
	names  map[string]*nameData
}

type nameData struct {
	a   []netip.Addr
	txt []string
}

func (n *nameData) empty() bool { return len(n.a) == 0 && len(n.txt) == 0 }

func newZone(origin string) *zone {
	return &zone{origin: origin, names: map[string]*nameData{}}
}

// errTooMany is a transfer with more names than max_entries.
var errTooMany = errors.New("more names than max_entries")

// add records rr; it reports errTooMany when a new name would pass max.
func (z *zone) add(rr dns.RR, max int) error {
	name := dns.CanonicalName(rr.Header().Name)
	var a netip.Addr
	var txt string
	switch v := rr.(type) {
	case *dns.A:
		var ok bool
		if a, ok = netip.AddrFromSlice(v.A); !ok {
			return nil
		}
		a = a.Unmap()
	case *dns.TXT:
		txt = strings.Join(v.Txt, "")
	default:
		return nil
	}
	n := z.names[name]
	if n == nil {
		if len(z.names) >= max {
			return errTooMany
		}
		n = &nameData{}
		z.names[name] = n
	}
	if a.IsValid() {
		for _, x := range n.a {
			if x == a {
				return nil
			}
		}
		n.a = append(n.a, a)
	} else {
		for _, x := range n.txt {
			if x == txt {
				return nil
			}
		}
		n.txt = append(n.txt, txt)
	}
	return nil
}

// remove drops rr (an IXFR deletion); a record that is not there is
// ignored.
func (z *zone) remove(rr dns.RR) {
	name := dns.CanonicalName(rr.Header().Name)
	n := z.names[name]
	if n == nil {
		return
	}
	switch v := rr.(type) {
	case *dns.A:
		if a, ok := netip.AddrFromSlice(v.A); ok {
			a = a.Unmap()
			for i, x := range n.a {
				if x == a {
					n.a = append(n.a[:i], n.a[i+1:]...)
					break
				}
			}
		}
	case *dns.TXT:
		txt := strings.Join(v.Txt, "")
		for i, x := range n.txt {
			if x == txt {
				n.txt = append(n.txt[:i], n.txt[i+1:]...)
				break
			}
		}
	}
	if n.empty() {
		delete(z.names, name)
	}
}

// fullZone builds a zone from the records of an AXFR (or of an IXFR
// answered with the whole zone): SOA first and last.
func fullZone(origin string, rrs []dns.RR, max int) (*zone, error) {
	if len(rrs) < 2 {
		return nil, fmt.Errorf("transfer of %s: %d records: want at least the SOA twice", origin, len(rrs))
	}
	first, ok1 := rrs[0].(*dns.SOA)
	last, ok2 := rrs[len(rrs)-1].(*dns.SOA)
	if !ok1 || !ok2 || first.Serial != last.Serial {
		return nil, fmt.Errorf("transfer of %s: does not start and end with the same SOA", origin)
	}
	z := newZone(origin)
	z.soa = first
	for _, rr := range rrs[1 : len(rrs)-1] {
		if !dns.IsSubDomain(origin, dns.CanonicalName(rr.Header().Name)) {
			continue // out of zone: not ours to keep
		}
		if err := z.add(rr, max); err != nil {
			return nil, fmt.Errorf("transfer of %s: %w", origin, err)
		}
	}
	return z, nil
}

// errNeedAXFR is an IXFR answer that cannot be applied to the zone held.
var errNeedAXFR = errors.New("incremental transfer does not apply")

// applyIXFR patches z with the records of an incremental answer (RFC 1995:
// new SOA, then per version the old SOA, deletions, the next SOA and
// additions, then the new SOA again). z is changed only when every
// sequence applies; errNeedAXFR otherwise.
func (z *zone) applyIXFR(rrs []dns.RR, max int) (*zone, error) {
	newSOA, ok := rrs[0].(*dns.SOA)
	if !ok || len(rrs) < 3 {
		return nil, errNeedAXFR
	}
	if last, ok := rrs[len(rrs)-1].(*dns.SOA); !ok || last.Serial != newSOA.Serial {
		return nil, errNeedAXFR
	}
	next := z.clone()
	serial := z.soa.Serial
	body := rrs[1 : len(rrs)-1]
	deleting := false
	for _, rr := range body {
		soa, isSOA := rr.(*dns.SOA)
		switch {
		case isSOA && !deleting:
			// the start of a version's deletions: its old serial must be
			// the one reached so far
			if soa.Serial != serial {
				return nil, errNeedAXFR
			}
			deleting = true
		case isSOA && deleting:
			serial, deleting = soa.Serial, false
		case deleting:
			next.remove(rr)
		default:
			if !dns.IsSubDomain(z.origin, dns.CanonicalName(rr.Header().Name)) {
				continue
			}
			if err := next.add(rr, max); err != nil {
				return nil, err
			}
		}
	}
	if deleting || serial != newSOA.Serial {
		return nil, errNeedAXFR
	}
	next.soa = newSOA
	return next, nil
}

func (z *zone) clone() *zone {
	c := &zone{origin: z.origin, soa: z.soa, names: make(map[string]*nameData, len(z.names))}
	for k, v := range z.names {
		c.names[k] = &nameData{a: append([]netip.Addr(nil), v.a...), txt: append([]string(nil), v.txt...)}
	}
	return c
}

// entries parses every name of the zone into the listings it holds and
// counts the names skipped, by reason. A name with only other records
// (the apex's NS, the SOA) is no listing and not counted.
func (z *zone) entries() ([]Entry, map[string]int) {
	out := make([]Entry, 0, len(z.names))
	skipped := map[string]int{}
	for name, n := range z.names {
		if name == z.origin {
			continue
		}
		p, err := ParseName(name, z.origin)
		if err != nil {
			skipped[SkipReason(err)]++
			continue
		}
		code, ok := listingCode(n.a)
		if !ok {
			skipped[SkipNoA]++
			continue
		}
		e := Entry{Prefix: p, Code: code}
		for _, t := range n.txt {
			d, r, u := ParseTXT(t)
			if e.Reason == "" || (!u.IsZero() && (e.Until.IsZero() || u.After(e.Until))) {
				e.Detector, e.Reason, e.Until = d, r, u
			}
		}
		out = append(out, e)
	}
	return dropCovered(out, skipped), skipped
}

// dropCovered removes the wildcards that only repeat a broader listing:
// a publisher gives the names between a prefix's wildcard and a longer
// listing below it wildcards of their own with the broader ban's data
// (DNS wildcards stop at names that exist), and those are no bans of
// their own. They are counted as SkipCovered. A full address's name is
// always a ban of its own, whatever it repeats.
func dropCovered(es []Entry, skipped map[string]int) []Entry {
	byPrefix := make(map[netip.Prefix]int, len(es))
	for i, e := range es {
		byPrefix[e.Prefix] = i
	}
	out := make([]Entry, 0, len(es))
	for _, e := range es {
		if coveredBySame(e, es, byPrefix) {
			skipped[SkipCovered]++
			continue
		}
		out = append(out, e)
	}
	return out
}

func coveredBySame(e Entry, es []Entry, byPrefix map[netip.Prefix]int) bool {
	if e.Prefix.IsSingleIP() {
		return false
	}
	unit := 4
	if e.Prefix.Addr().Is4() {
		unit = 8
	}
	for bits := e.Prefix.Bits() - unit; bits > 0; bits -= unit {
		up, _ := e.Prefix.Addr().Prefix(bits)
		if i, ok := byPrefix[up]; ok {
			b := es[i]
			return b.Code == e.Code && b.Detector == e.Detector && b.Reason == e.Reason && b.Until.Equal(e.Until)
		}
	}
	return false
}

// listingCode is the code of the first A record in 127.0.0.0/8 (RFC 5782
// return codes); false if there is none.
func listingCode(as []netip.Addr) (byte, bool) {
	for _, a := range as {
		if a.Is4() && a.As4()[0] == 127 {
			return a.As4()[3], true
		}
	}
	return 0, false
}

// mirrorUntil is an entry's until as mirrored: the peer's own, at most
// maxBan from now.
func mirrorUntil(e Entry, now time.Time, maxBan time.Duration) time.Time {
	limit := now.Add(maxBan)
	if !e.Until.IsZero() && e.Until.Before(limit) {
		return e.Until
	}
	return limit
}
