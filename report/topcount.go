package report

import (
	"slices"
)

// DefaultCapacity is how many keys each top section tracks by default.
const DefaultCapacity = 10000

// topCounter counts keys in bounded memory: a Misra-Gries summary with
// batched decrements. While at most capacity distinct keys were seen every
// count is exact. When a new key arrives with capacity keys tracked, the
// smallest counts are decremented by a common amount v chosen so that at
// most half the capacity stays tracked (the new key is dropped); under stays
// the sum of these v. Every tracked count is then at most under below the
// true count, an untracked key occurred at most under times, and under ≤
// n/(capacity/2+1) for n counted occurrences. Batching makes the cost per
// new key O(log capacity) amortised instead of O(capacity).
type topCounter[K comparable, V any] struct {
	m        map[K]*counted[V]
	capacity int
	under    int64         // largest possible undercount of any key
	own      func(K) K     // copies a key before it is stored (may be nil)
	merge    func(a, b *V) // merges b's extra data into a (may be nil)
	scratch  []int64
}

type counted[V any] struct {
	n int64
	v V // extra data of the key (names, reasons, distinct clients)
}

func newTopCounter[K comparable, V any](capacity int, own func(K) K, merge func(a, b *V)) *topCounter[K, V] {
	if capacity < 2 {
		capacity = 2
	}
	return &topCounter[K, V]{m: make(map[K]*counted[V]), capacity: capacity, own: own, merge: merge}
}

// add counts one occurrence of k and returns its entry, or nil when k is
// not tracked (the summary was full and k is new).
func (t *topCounter[K, V]) add(k K) *counted[V] {
	if c := t.m[k]; c != nil {
		c.n++
		return c
	}
	if len(t.m) >= t.capacity {
		t.shrink(1)
		return nil
	}
	if t.own != nil {
		k = t.own(k)
	}
	c := &counted[V]{n: 1}
	t.m[k] = c
	return c
}

// shrink subtracts from every count the (capacity/2+1)-th largest of the
// counts and of extra (the count of a key not stored, 0 for none), and
// drops the keys left at zero or below, so at most capacity/2 stay.
func (t *topCounter[K, V]) shrink(extra int64) {
	keep := t.capacity / 2
	if len(t.m) <= keep && extra == 0 {
		return
	}
	counts := t.scratch[:0]
	for _, c := range t.m {
		counts = append(counts, c.n)
	}
	if extra > 0 {
		counts = append(counts, extra)
	}
	slices.Sort(counts)
	v := counts[len(counts)-1-keep] // (keep+1)-th largest
	t.scratch = counts[:0]
	for k, c := range t.m {
		if c.n -= v; c.n <= 0 {
			delete(t.m, k)
		}
	}
	t.under += v
}

// mergeFrom adds b's counts into t (b must not be used afterwards). A key
// tracked by only one side keeps that side's count; the undercounts add
// up. If more than capacity keys result, t shrinks.
func (t *topCounter[K, V]) mergeFrom(b *topCounter[K, V]) {
	for k, cb := range b.m {
		ca := t.m[k]
		if ca == nil {
			t.m[k] = cb
			continue
		}
		ca.n += cb.n
		if t.merge != nil {
			t.merge(&ca.v, &cb.v)
		}
	}
	t.under += b.under
	if len(t.m) > t.capacity {
		t.shrink(0)
	}
}

// counts returns the tracked counts as plain numbers, for sorting.
func (t *topCounter[K, V]) counts() map[K]int64 {
	out := make(map[K]int64, len(t.m))
	for k, c := range t.m {
		out[k] = c.n
	}
	return out
}

// distinctCounter counts distinct 64-bit hashes in bounded memory: exactly
// up to size of them, then estimated from the size smallest hashes (the
// K-minimum-values sketch; relative standard error about 1/sqrt(size-2)).
// Two counters of the same size merge into the counter of the union.
type distinctCounter struct {
	min  []uint64 // the smallest hashes seen, ascending, at most size
	size int
	over bool // more than size distinct hashes were seen
}

func (d *distinctCounter) add(h uint64) {
	i, found := slices.BinarySearch(d.min, h)
	if found {
		return
	}
	if len(d.min) < d.size {
		d.min = slices.Insert(d.min, i, h)
		return
	}
	d.over = true
	if i < len(d.min) {
		copy(d.min[i+1:], d.min[i:len(d.min)-1])
		d.min[i] = h
	}
}

func (d *distinctCounter) mergeFrom(b *distinctCounter) {
	d.over = d.over || b.over
	for _, h := range b.min {
		d.add(h)
	}
}

// count returns the number of distinct hashes and whether it is an estimate.
func (d *distinctCounter) count() (int64, bool) {
	if !d.over {
		return int64(len(d.min)), false
	}
	// The size-th smallest of n uniform hashes is near size/n of the range.
	frac := float64(d.min[len(d.min)-1]) / (1 << 64)
	if frac <= 0 {
		return int64(len(d.min)), true
	}
	return max(int64(float64(d.size-1)/frac), int64(len(d.min))+1), true
}

// mix64 spreads the bits of x (the splitmix64 finaliser), so that FNV
// hashes of similar addresses are uniform enough for distinctCounter.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
