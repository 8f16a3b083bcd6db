package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
)

// nftInterval is one set element as the kernel stores it in an interval
// set: [start, end), or only start when the range reaches the last
// address (its end would wrap) or the set has no interval flag.
type nftInterval struct {
	start, end netip.Addr    // end invalid: open to the top, or a single key
	until      time.Time     // wanted: the ban's end (zero: none)
	timeout    time.Duration // read from the kernel
	expires    time.Duration // read from the kernel: time left
	comment    string        // read from the kernel
	single     bool          // a key of a set without the interval flag
}

type nftKey struct{ start, end netip.Addr }

func (iv nftInterval) key() nftKey { return nftKey{iv.start, iv.end} }

// String renders the element as nft does: a prefix where the range is one,
// else start-last.
func (iv nftInterval) String() string {
	if iv.single {
		return iv.start.String()
	}
	if p, ok := rangePrefix(iv.start, iv.end); ok {
		if p.IsSingleIP() {
			return p.Addr().String()
		}
		return p.String()
	}
	if !iv.end.IsValid() {
		return iv.start.String() + "-" + lastAddr(netip.PrefixFrom(iv.start, 0)).String()
	}
	return iv.start.String() + "-" + iv.end.Prev().String()
}

// prefixInterval turns a ban prefix into the element(s) an interval set
// needs: the first address and the address after the last (the interval
// end), from the library's NetFirstAndLastIP. A /32 or /128 is the range
// [a, a+1); a range that ends at the top address has no end element.
func prefixInterval(p netip.Prefix) (nftInterval, error) {
	first, last, err := nftables.NetFirstAndLastIP(p.String())
	if err != nil {
		return nftInterval{}, fmt.Errorf("%s: %w", p, err)
	}
	start, ok1 := addrFromIP(first, p.Addr().Is4())
	lastA, ok2 := addrFromIP(last, p.Addr().Is4())
	if !ok1 || !ok2 || start != p.Addr() {
		return nftInterval{}, fmt.Errorf("%s: unexpected range %s-%s", p, first, last)
	}
	return nftInterval{start: start, end: lastA.Next()}, nil
}

func addrFromIP(ip net.IP, is4 bool) (netip.Addr, bool) {
	if is4 {
		ip = ip.To4()
	} else {
		ip = ip.To16()
	}
	return netip.AddrFromSlice(ip)
}

// rangePrefix is the CIDR prefix covering exactly [start, end) (end
// invalid: up to the top address), if there is one.
func rangePrefix(start, end netip.Addr) (netip.Prefix, bool) {
	bitLen := start.BitLen()
	for bits := bitLen; bits >= 1; bits-- {
		p := netip.PrefixFrom(start, bits)
		if p.Masked().Addr() != start {
			break // start is not aligned for shorter prefixes either
		}
		next := lastAddr(p).Next()
		if next == end {
			return p, true
		}
		if !next.IsValid() || (end.IsValid() && end.Less(next)) {
			break
		}
	}
	return netip.Prefix{}, false
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// kernelIntervals pairs the start and end elements the kernel dumps
// (newest kernels in descending order, but no order is relied on) into
// intervals. An end without a start (left behind when the kernel expired
// its start element) is skipped: the kernel removes it by itself.
func kernelIntervals(elems []nftables.SetElement, interval, is4 bool) []nftInterval {
	type el struct {
		a netip.Addr
		e *nftables.SetElement
	}
	list := make([]el, 0, len(elems))
	for i := range elems {
		a, ok := netip.AddrFromSlice(elems[i].Key)
		if !ok || a.Is4() != is4 {
			continue
		}
		list = append(list, el{a, &elems[i]})
	}
	out := make([]nftInterval, 0, len(list)/2+1)
	if !interval {
		for _, x := range list {
			out = append(out, nftInterval{start: x.a, timeout: x.e.Timeout, expires: x.e.Expires, comment: x.e.Comment, single: true})
		}
		return out
	}
	slices.SortFunc(list, func(x, y el) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		// The end of one range sorts before the start of the next one
		// at the same address.
		switch {
		case x.e.IntervalEnd == y.e.IntervalEnd:
			return 0
		case x.e.IntervalEnd:
			return -1
		}
		return 1
	})
	var open *nftInterval
	for _, x := range list {
		if x.e.IntervalEnd {
			if open != nil {
				open.end = x.a
				out = append(out, *open)
				open = nil
			}
			continue
		}
		if open != nil { // two starts in a row: the first is open-ended
			out = append(out, *open)
		}
		open = &nftInterval{start: x.a, timeout: x.e.Timeout, expires: x.e.Expires, comment: x.e.Comment}
	}
	if open != nil {
		out = append(out, *open)
	}
	return out
}

// setElements is the netlink form of intervals. Timeout (until-now,
// computed at send time) and comment go on the start element only: the
// kernel refuses a timeout on an interval end. A ban that ended in the
// meantime is left out.
func setElements(ivs []nftInterval, withTimeout bool, now time.Time) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(ivs))
	for _, iv := range ivs {
		e := nftables.SetElement{Key: iv.start.AsSlice(), Comment: nftElemComment}
		if withTimeout {
			to, ok := timeoutAt(iv.until, now)
			if !ok {
				continue
			}
			e.Timeout = to
		}
		out = append(out, e)
		if iv.end.IsValid() {
			out = append(out, nftables.SetElement{Key: iv.end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// delElements is the netlink form of intervals to delete: the keys only.
func delElements(ivs []nftInterval) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(ivs))
	for _, iv := range ivs {
		out = append(out, nftables.SetElement{Key: iv.start.AsSlice()})
		if iv.end.IsValid() {
			out = append(out, nftables.SetElement{Key: iv.end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// nftModel is the ban list the action was told about (Sync, Apply,
// Revoke). An interval set cannot hold a prefix inside another one (the
// kernel refuses the overlap), so only the outermost active prefixes go
// into the kernel; a covered ban is carried out by its cover and added
// when the cover is revoked.
type nftModel struct {
	bans map[netip.Prefix]time.Time // Until; zero: no end
	lens [2][129]int                // bans per family (0: IPv4) and prefix length
}

func newNFTModel() *nftModel { return &nftModel{bans: map[netip.Prefix]time.Time{}} }

func famIndex(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1
}

func activeAt(until, now time.Time) bool { return until.IsZero() || now.Before(until) }

func (m *nftModel) set(p netip.Prefix, until time.Time) {
	if _, ok := m.bans[p]; !ok {
		m.lens[famIndex(p)][p.Bits()]++
	}
	m.bans[p] = until
}

func (m *nftModel) remove(p netip.Prefix) {
	if _, ok := m.bans[p]; ok {
		m.lens[famIndex(p)][p.Bits()]--
		delete(m.bans, p)
	}
}

// coveredBetween reports whether an active ban strictly inside the prefix
// lengths (lo, p.Bits()) contains p.
func (m *nftModel) coveredBetween(p netip.Prefix, lo int, now time.Time) bool {
	lens := &m.lens[famIndex(p)]
	for l := lo + 1; l < p.Bits(); l++ {
		if lens[l] == 0 {
			continue
		}
		if until, ok := m.bans[netip.PrefixFrom(p.Addr(), l).Masked()]; ok && activeAt(until, now) {
			return true
		}
	}
	return false
}

// covered reports whether an active shorter ban contains p.
func (m *nftModel) covered(p netip.Prefix, now time.Time) bool { return m.coveredBetween(p, 0, now) }

// inKernel reports whether p is one of the outermost active bans, the
// ones the kernel set holds.
func (m *nftModel) inKernel(p netip.Prefix, now time.Time) bool {
	until, ok := m.bans[p]
	return ok && activeAt(until, now) && !m.covered(p, now)
}

// topInside lists the active bans strictly inside p that no other ban
// strictly inside p covers: what the kernel holds for p's range when p
// itself is not banned.
func (m *nftModel) topInside(p netip.Prefix, now time.Time) []netip.Prefix {
	lens := &m.lens[famIndex(p)]
	deeper := false
	for l := p.Bits() + 1; l < len(lens); l++ {
		deeper = deeper || lens[l] > 0
	}
	if !deeper {
		return nil
	}
	var out []netip.Prefix
	for q, until := range m.bans {
		if q.Bits() <= p.Bits() || q.Addr().Is4() != p.Addr().Is4() || !p.Contains(q.Addr()) || !activeAt(until, now) {
			continue
		}
		if !m.coveredBetween(q, p.Bits(), now) {
			out = append(out, q)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// timeoutAt is the kernel timeout for a ban: until-now rounded up to
// the millisecond, 0 (no timeout) for a ban without end; ok is false
// for a ban that is over.
func timeoutAt(until, now time.Time) (time.Duration, bool) {
	if until.IsZero() {
		return 0, true
	}
	d := until.Sub(now)
	if d <= 0 {
		return 0, false
	}
	return (d + time.Millisecond - 1).Truncate(time.Millisecond), true
}
