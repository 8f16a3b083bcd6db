package ban

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// banIndex holds the bans in memory for per-connection lookups:
// longest-prefix match over one hash map per prefix length in use (/32…/0
// for IPv4, /128…/0 for IPv6). Most lookups are of addresses that are not
// banned, and a probe of a large map is a cache miss: a small bit filter
// (a Bloom filter with one hash) answers "certainly not at this length"
// first. Lookups take a read lock and allocate nothing; the Manager
// updates the index on every ban, extension, unban, expiry and reload.
type banIndex struct {
	mu     sync.RWMutex
	v4     [33]map[uint32]indexEntry
	v6     [129]map[v6Key]indexEntry
	v4Lens uint64    // bit l set: v4[l] holds entries
	v6Lens [3]uint64 // bit l%64 of word l/64 set: v6[l] holds entries

	// filter has a bit set for the hash of every (length, masked address)
	// in the maps. Removals leave their bits (a stale bit costs one wasted
	// probe, never a wrong answer) until the filter is rebuilt.
	filter      []uint64
	filterShift uint // 64 - log2(bits in filter)
	live, stale int  // entries; removals since the filter was built
}

type v6Key struct{ hi, lo uint64 }

// indexEntry is a Ban without its prefix (the map key and length give
// it): small enough (104 bytes) for the map to keep it in its slot, so a
// hit reads no memory elsewhere.
type indexEntry struct {
	detector, reason  string
	evidence, offence int
	since, until      time.Time
	dryRun            bool
}

func entryOf(b Ban) indexEntry {
	return indexEntry{detector: b.Detector, reason: b.Reason, evidence: b.Evidence, offence: b.Offence,
		since: b.Since, until: b.Until, dryRun: b.DryRun}
}

func (e *indexEntry) ban(p netip.Prefix) Ban {
	return Ban{Prefix: p, Detector: e.detector, Reason: e.reason, Evidence: e.evidence,
		Since: e.since, Until: e.until, Offence: e.offence, DryRun: e.dryRun}
}

func v4Prefix(k uint32, l int) netip.Prefix {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], k)
	return netip.PrefixFrom(netip.AddrFrom4(a), l)
}

func v6Prefix(k v6Key, l int) netip.Prefix {
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], k.hi)
	binary.BigEndian.PutUint64(a[8:], k.lo)
	return netip.PrefixFrom(netip.AddrFrom16(a), l)
}

// minFilterBits keeps the filter at 8 KiB at least; it grows to 16 bits
// per entry (about 6% false positives per probe).
const (
	minFilterBits  = 1 << 16
	filterBitsEach = 16
)

func newBanIndex() *banIndex {
	return &banIndex{filter: make([]uint64, minFilterBits/64), filterShift: 64 - 16}
}

func mix(x uint64) uint64 {
	x ^= x >> 31
	x *= 0x9e3779b97f4a7c15
	x ^= x >> 29
	x *= 0xbf58476d1ce4e5b9
	return x ^ x>>32
}

func v4Hash(masked uint32, l int) uint64 { return mix(uint64(masked) | uint64(l)<<32) }

func v6Hash(k v6Key, l int) uint64 {
	return mix(k.hi ^ mix(k.lo^uint64(l)<<56^1<<55))
}

func (x *banIndex) mayHave(h uint64) bool {
	i := h >> x.filterShift
	return x.filter[i/64]&(1<<(i%64)) != 0
}

func (x *banIndex) mark(h uint64) {
	i := h >> x.filterShift
	x.filter[i/64] |= 1 << (i % 64)
}

// rebuildFilter sizes the filter for the live entries and sets their bits
// only; x.mu is held for writing.
func (x *banIndex) rebuildFilter() {
	n := minFilterBits
	for n < filterBitsEach*x.live {
		n *= 2
	}
	x.filter = make([]uint64, n/64)
	x.filterShift = uint(64 - bits.TrailingZeros(uint(n)))
	for l, m := range x.v4 {
		for k := range m {
			x.mark(v4Hash(k, l))
		}
	}
	for l, m := range x.v6 {
		for k := range m {
			x.mark(v6Hash(k, l))
		}
	}
	x.stale = 0
}

// counted keeps live and stale and rebuilds the filter when it has grown
// too full or holds more stale bits than live ones; x.mu is held.
func (x *banIndex) counted(added, removed int) {
	x.live += added - removed
	x.stale += removed
	if filterBitsEach*x.live > 2*len(x.filter)*64 || x.stale > max(x.live, 1024) {
		x.rebuildFilter()
	}
}

func v4Bits(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func v6Bits(a netip.Addr) v6Key {
	b := a.As16()
	return v6Key{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func v4Mask(x uint32, l int) uint32 {
	if l == 0 {
		return 0
	}
	return x &^ (1<<(32-l) - 1)
}

func v6Mask(k v6Key, l int) v6Key {
	switch {
	case l == 0:
		return v6Key{}
	case l <= 64:
		return v6Key{k.hi &^ (1<<(64-l) - 1), 0}
	case l < 128:
		return v6Key{k.hi, k.lo &^ (1<<(128-l) - 1)}
	}
	return k
}

// set adds or replaces the ban of b.Prefix (canonical: masked, unmapped).
func (x *banIndex) set(b Ban) {
	p := b.Prefix
	l := p.Bits()
	x.mu.Lock()
	defer x.mu.Unlock()
	if p.Addr().Is4() {
		if x.v4[l] == nil {
			x.v4[l] = map[uint32]indexEntry{}
		}
		k := v4Bits(p.Addr())
		n := len(x.v4[l])
		x.v4[l][k] = entryOf(b)
		x.v4Lens |= 1 << l
		x.mark(v4Hash(k, l))
		x.counted(len(x.v4[l])-n, 0)
		return
	}
	if x.v6[l] == nil {
		x.v6[l] = map[v6Key]indexEntry{}
	}
	k := v6Bits(p.Addr())
	n := len(x.v6[l])
	x.v6[l][k] = entryOf(b)
	x.v6Lens[l/64] |= 1 << (l % 64)
	x.mark(v6Hash(k, l))
	x.counted(len(x.v6[l])-n, 0)
}

// remove drops the ban of p, if any.
func (x *banIndex) remove(p netip.Prefix) {
	l := p.Bits()
	x.mu.Lock()
	defer x.mu.Unlock()
	if p.Addr().Is4() {
		if m := x.v4[l]; m != nil {
			n := len(m)
			delete(m, v4Bits(p.Addr()))
			x.counted(0, n-len(m))
			if len(m) == 0 {
				x.v4[l] = nil
				x.v4Lens &^= 1 << l
			}
		}
		return
	}
	if m := x.v6[l]; m != nil {
		n := len(m)
		delete(m, v6Bits(p.Addr()))
		x.counted(0, n-len(m))
		if len(m) == 0 {
			x.v6[l] = nil
			x.v6Lens[l/64] &^= 1 << (l % 64)
		}
	}
}

// replace makes bans the whole content (start-up and Restore).
func (x *banIndex) replace(bans []Ban) {
	fresh := newBanIndex()
	for _, b := range bans {
		fresh.set(b)
	}
	fresh.rebuildFilter()
	x.mu.Lock()
	x.v4, x.v6, x.v4Lens, x.v6Lens = fresh.v4, fresh.v6, fresh.v4Lens, fresh.v6Lens
	x.filter, x.filterShift, x.live, x.stale = fresh.filter, fresh.filterShift, fresh.live, fresh.stale
	x.mu.Unlock()
}

// get returns the ban of exactly p, in force or not.
func (x *banIndex) get(p netip.Prefix) (Ban, bool) {
	l := p.Bits()
	x.mu.RLock()
	defer x.mu.RUnlock()
	var (
		e  indexEntry
		ok bool
	)
	if p.Addr().Is4() {
		e, ok = x.v4[l][v4Bits(p.Addr())]
	} else {
		e, ok = x.v6[l][v6Bits(p.Addr())]
	}
	if !ok {
		return Ban{}, false
	}
	return e.ban(p), true
}

// lookup returns the ban in force at now of the longest banned prefix
// containing a. Bans over at now never match, even before the sweep
// removes them. With enforced, a dry run's would-be bans are skipped: a
// would-be /32 must not hide the real /24 around it.
func (x *banIndex) lookup(a netip.Addr, now time.Time, enforced bool) (Ban, bool) {
	a = a.Unmap()
	x.mu.RLock()
	defer x.mu.RUnlock()
	if a.Is4() {
		ip := v4Bits(a)
		for lens := x.v4Lens; lens != 0; {
			l := 63 - bits.LeadingZeros64(lens)
			lens &^= 1 << l
			k := v4Mask(ip, l)
			if !x.mayHave(v4Hash(k, l)) {
				continue
			}
			if e, ok := x.v4[l][k]; ok && e.until.After(now) && !(enforced && e.dryRun) {
				return e.ban(v4Prefix(k, l)), true
			}
		}
		return Ban{}, false
	}
	if !a.Is6() {
		return Ban{}, false
	}
	ip := v6Bits(a)
	for w := 2; w >= 0; w-- {
		for lens := x.v6Lens[w]; lens != 0; {
			i := 63 - bits.LeadingZeros64(lens)
			lens &^= 1 << i
			l := w*64 + i
			k := v6Mask(ip, l)
			if !x.mayHave(v6Hash(k, l)) {
				continue
			}
			if e, ok := x.v6[l][k]; ok && e.until.After(now) && !(enforced && e.dryRun) {
				return e.ban(v6Prefix(k, l)), true
			}
		}
	}
	return Ban{}, false
}

// each calls fn for every entry (in force or not) under the read lock.
// The entry is passed by value: a pointer to the loop variable would move
// every entry to the heap.
func (x *banIndex) each(fn func(netip.Prefix, indexEntry)) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for l, m := range x.v4 {
		for k, e := range m {
			fn(v4Prefix(k, l), e)
		}
	}
	for l, m := range x.v6 {
		for k, e := range m {
			fn(v6Prefix(k, l), e)
		}
	}
}

// active returns the bans in force at now in order of Until (as the
// store's Active does), then of prefix.
func (x *banIndex) active(now time.Time) []Ban {
	x.mu.RLock()
	out := make([]Ban, 0, x.live)
	x.mu.RUnlock()
	x.each(func(p netip.Prefix, e indexEntry) {
		if e.until.After(now) {
			out = append(out, e.ban(p))
		}
	})
	slices.SortFunc(out, func(a, b Ban) int {
		if c := a.Until.Compare(b.Until); c != 0 {
			return c
		}
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
	return out
}

// count returns how many bans are in force at now, real and dry-run.
func (x *banIndex) count(now time.Time) (real, dry int) {
	x.each(func(_ netip.Prefix, e indexEntry) {
		switch {
		case !e.until.After(now):
		case e.dryRun:
			dry++
		default:
			real++
		}
	})
	return real, dry
}
