package detectors

import (
	"hash/maphash"
	"math"
	"net/netip"
)

// entry is one counted event in a window.
type entry struct {
	t    int64  // log time, Unix nanoseconds
	h    uint64 // recipient or address hash for distinct counting, else 0
	line string // raw line kept as evidence ("" once older than the last N)
}

// counter is one detector's window for one key. Entries are in time order
// and there are never more than the detector's threshold of them.
type counter struct {
	det      detID
	muted    int64 // no decision from det for this key before this time
	ev       []entry
	forgiven []int64 // times accepted mail took an entry back (flood: exempted an event), oldest first
}

// expire drops the entries that are window or more older than now.
func (c *counter) expire(now, window int64) {
	i := 0
	for i < len(c.ev) && now-c.ev[i].t >= window {
		i++
	}
	if i == 0 {
		return
	}
	n := copy(c.ev, c.ev[i:])
	clear(c.ev[n:])
	c.ev = c.ev[:n]
}

// add appends an entry, keeping at most limit entries and the lines of only
// the newest keep entries. With distinct set, an entry with the same hash
// is moved to the end instead (a repeat does not count twice).
func (c *counter) add(e entry, limit, keep int, distinct bool) {
	if distinct {
		for i := range c.ev {
			if c.ev[i].h == e.h {
				copy(c.ev[i:], c.ev[i+1:])
				c.ev[len(c.ev)-1] = entry{}
				c.ev = c.ev[:len(c.ev)-1]
				break
			}
		}
	}
	if len(c.ev) >= limit { // only when a decision was muted; keep the newest
		n := copy(c.ev, c.ev[len(c.ev)-limit+1:])
		clear(c.ev[n:])
		c.ev = c.ev[:n]
	}
	if len(c.ev) == cap(c.ev) && cap(c.ev) < limit {
		// grow to at most limit: append's doubling would leave a window
		// of 10 with room for 16
		grown := make([]entry, len(c.ev), min(max(2*cap(c.ev), 1), limit))
		copy(grown, c.ev)
		c.ev = grown
	}
	c.ev = append(c.ev, e)
	if k := len(c.ev) - 1 - keep; k >= 0 {
		c.ev[k].line = ""
	}
}

// since counts the entries newer than t.
func (c *counter) since(t int64) int {
	n := 0
	for i := len(c.ev) - 1; i >= 0 && c.ev[i].t > t; i-- {
		n++
	}
	return n
}

// remove drops the entry with hash h, if any.
func (c *counter) remove(h uint64) {
	for i := range c.ev {
		if c.ev[i].h == h {
			copy(c.ev[i:], c.ev[i+1:])
			c.ev[len(c.ev)-1] = entry{}
			c.ev = c.ev[:len(c.ev)-1]
			return
		}
	}
}

// spendForgiveness records a forgiveness at now and reports true when fewer
// than budget were recorded within the window before now.
func (c *counter) spendForgiveness(now, window int64, budget int) bool {
	i := 0
	for i < len(c.forgiven) && now-c.forgiven[i] >= window {
		i++
	}
	c.forgiven = c.forgiven[:copy(c.forgiven, c.forgiven[i:])]
	if len(c.forgiven) >= budget {
		return false
	}
	c.forgiven = append(c.forgiven, now)
	return true
}

// dropOldest removes the oldest entry.
func (c *counter) dropOldest() {
	n := copy(c.ev, c.ev[1:])
	clear(c.ev[n:])
	c.ev = c.ev[:n]
}

// reset forgets the entries (not the mute).
func (c *counter) reset() {
	clear(c.ev)
	c.ev = c.ev[:0]
}

// state is what the engine knows about one key (an address or a prefix).
type state struct {
	key        netip.Prefix
	prev, next *state // LRU list; head is the most recently seen
	last       int64  // latest log time seen for this key
	idle       bool   // in the table's idle list
	ctrs       []counter
	score      *scoreState // nil until a scored event
}

func (s *state) counter(d detID) *counter {
	for i := range s.ctrs {
		if s.ctrs[i].det == d {
			return &s.ctrs[i]
		}
	}
	s.ctrs = append(s.ctrs, counter{det: d})
	return &s.ctrs[len(s.ctrs)-1]
}

func (s *state) find(d detID) *counter {
	for i := range s.ctrs {
		if s.ctrs[i].det == d {
			return &s.ctrs[i]
		}
	}
	return nil
}

// list is an intrusive doubly linked list of states, newest at head.
type list struct{ head, tail *state }

func (l *list) unlink(s *state) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		l.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next = nil, nil
}

func (l *list) pushFront(s *state) {
	s.next = l.head
	if l.head != nil {
		l.head.prev = s
	}
	l.head = s
	if l.tail == nil {
		l.tail = s
	}
}

// table is a map of states in least-recently-seen order, capped at max
// entries. A state idle for horizon (the longest ordinary window) is
// dropped, unless it still holds a longer window (sasl_bruteforce's long
// one, a score): then it waits in the idle list until that has passed
// too. So the long windows keep only the few states that use them.
type table struct {
	m        map[netip.Prefix]*state
	recent   list // idle for less than horizon
	idleL    list // idle past horizon, holding a longer window; all older than recent's
	max      int
	horizon  int64
	spans    *[nDet]int64 // how long an entry of each detector matters
	bars     *[nDet]bar   // what decides for each detector
	scoreSp  int64        // how long a score matters
	scoreHL  int64        // the score's half-life
	scoreThr float64      // the score's threshold
	evicted  uint64       // dropped because of max
	expired  uint64       // dropped because idle for horizon
}

// bar is what decides for a detector: threshold entries within window,
// or longThreshold within longWindow (0: no long window).
type bar struct {
	window, longWindow       int64
	threshold, longThreshold int
}

func newTable(max int, horizon int64, spans *[nDet]int64, bars *[nDet]bar, scoreSpan, scoreHalfLife int64, scoreThr float64) *table {
	return &table{m: make(map[netip.Prefix]*state), max: max, horizon: horizon, spans: spans, bars: bars,
		scoreSp: scoreSpan, scoreHL: scoreHalfLife, scoreThr: scoreThr}
}

func (t *table) listOf(s *state) *list {
	if s.idle {
		return &t.idleL
	}
	return &t.recent
}

// lookup returns the state of key or nil, without touching the LRU order.
func (t *table) lookup(key netip.Prefix) *state { return t.m[key] }

// get returns the state of key, creating it (and evicting the least
// recently seen state if the table is full), and marks it as seen at now.
func (t *table) get(key netip.Prefix, now int64) *state {
	s := t.m[key]
	if s == nil {
		if len(t.m) >= t.max {
			if old := t.victim(now); old != nil {
				t.listOf(old).unlink(old)
				delete(t.m, old.key)
				t.evicted++
			}
		}
		s = &state{key: key, last: now}
		t.m[key] = s
		t.recent.pushFront(s)
		return s
	}
	if now > s.last {
		s.last = now
	}
	if s.idle || t.recent.head != s {
		t.listOf(s).unlink(s)
		s.idle = false
		t.recent.pushFront(s)
	}
	return s
}

// victimScan bounds how many states at the old end of each list victim
// looks at.
const victimScan = 8

// victim picks the state to drop when the table is full: of the few least
// recently seen states of each list, the one nearest to no decision (one
// holding nothing first), the older one on a tie. So a churn of new
// addresses (IPv6), each with an event or two, does not throw away the
// evidence that takes longest to gather (sasl_bruteforce's 6 h window, a
// score), which waits in the idle list.
func (t *table) victim(now int64) *state {
	var best *state
	bestP := 2.0
	for _, l := range [2]*list{&t.idleL, &t.recent} {
		n := 0
		for s := l.tail; s != nil && n < victimScan; s, n = s.prev, n+1 {
			if p := t.progress(s, now); p < bestP {
				best, bestP = s, p
			}
			if bestP == 0 {
				return best
			}
		}
	}
	return best
}

// progress is how near s is to a decision at now, 0 (holds nothing) to
// 1: of its windows, the fullest relative to its threshold (a window with
// a long one too: the fuller of the two), counting only entries still
// within the window, or its score decayed to now relative to the
// threshold.
func (t *table) progress(s *state, now int64) float64 {
	var p float64
	for i := range s.ctrs {
		c := &s.ctrs[i]
		b := &t.bars[c.det]
		if b.threshold > 0 {
			p = max(p, float64(c.since(now-b.window))/float64(b.threshold))
		}
		if b.longThreshold > 0 {
			p = max(p, float64(c.since(now-b.longWindow))/float64(b.longThreshold))
		}
	}
	if s.score != nil && s.score.events > 0 && t.scoreThr > 0 && t.scoreHL > 0 {
		decay := math.Exp2(-float64(max(now-s.score.at, 0)) / float64(t.scoreHL))
		p = max(p, s.score.total()*decay/t.scoreThr)
	}
	return min(p, 1)
}

// span is how long after its last event s still holds something.
func (t *table) span(s *state) int64 {
	var sp int64
	for i := range s.ctrs {
		if len(s.ctrs[i].ev) > 0 {
			sp = max(sp, t.spans[s.ctrs[i].det])
		}
	}
	if s.score != nil && s.score.events > 0 {
		sp = max(sp, t.scoreSp)
	}
	return sp
}

// expire drops states from the LRU end while they have been idle for the
// horizon (every window of theirs has passed, so they hold nothing); one
// that still holds a longer window moves to the idle list, which drops it
// once that has passed. Amortised O(1): each state moves and is dropped
// once.
func (t *table) expire(now int64) {
	for s := t.recent.tail; s != nil && now-s.last >= t.horizon; s = t.recent.tail {
		t.recent.unlink(s)
		if now-s.last < t.span(s) {
			// Older than every state in recent, newer than every idle
			// one: the idle list stays in order.
			s.idle = true
			t.idleL.pushFront(s)
			continue
		}
		delete(t.m, s.key)
		t.expired++
	}
	for s := t.idleL.tail; s != nil && now-s.last >= t.span(s); s = t.idleL.tail {
		t.idleL.unlink(s)
		delete(t.m, s.key)
		t.expired++
	}
}

// goodSlot is what the engine remembers of an address without tracking
// it: times of its latest successful login, accepted message and
// hostname warning (0: none). The address is kept whole (As16 of the
// unmapped address; no pointer, so the table costs the garbage collector
// nothing), so a sign is never attributed to another address.
type goodSlot struct {
	addr                      [16]byte
	login, accepted, mismatch int64
}

// signWays is how many slots a bucket of the signs table has.
const signWays = 8

type goodBucket [signWays]goodSlot

// recentGood remembers the recent honest signs of many addresses in fixed
// memory, so that logins, accepted mail and hostname warnings (most of a
// busy server's clients) need no state of their own. An address has two
// candidate buckets of signWays slots, chosen by a hash keyed with a seed
// of its own per table (nobody outside can aim at a victim's buckets), and
// goes into the emptier one. A slot whose signs have all passed is free;
// when both buckets are full of live signs, a login takes the slot with
// the oldest signs (one without a live login first), while accepted mail
// or a hostname warning never pushes out a live login: it is then not
// remembered. An address that loses its sign counts as it would without
// it, never borrows another's. Only which addresses compete for a bucket
// depends on the seed, so a replay decides as the daemon did unless both
// buckets of an address were full of live signs.
type recentGood struct {
	buckets  []goodBucket
	mask     uint64
	seed     maphash.Seed
	spans    signSpans
	overflow uint64 // signs dropped or pushed out while still live
}

// signSpans is how long each sign matters after its time.
type signSpans struct{ login, accepted, mismatch int64 }

// Sizing bounds of the signs table, in slots. A slot is 40 bytes: 5 MiB
// at the default max_clients of 100000, at most 40 MiB.
const (
	minSignSlots = 64
	maxSignSlots = 1 << 20
)

// newRecentGood sizes the table for maxClients addresses with live signs
// at once: the power of two of slots at or above 1.25 × maxClients (at
// most 80% full, where two choices of eight slots almost never overflow),
// between minSignSlots and maxSignSlots.
func newRecentGood(maxClients int, spans signSpans) recentGood {
	want := maxClients + maxClients/4
	n := minSignSlots
	for n < want && n < maxSignSlots {
		n *= 2
	}
	nb := n / signWays
	return recentGood{buckets: make([]goodBucket, nb), mask: uint64(nb - 1), seed: maphash.MakeSeed(), spans: spans}
}

// candidates returns the two buckets of a (the same one twice, sometimes).
func (g *recentGood) candidates(key *[16]byte) (*goodBucket, *goodBucket) {
	h := maphash.Bytes(g.seed, key[:])
	return &g.buckets[h&g.mask], &g.buckets[(h>>32)&g.mask]
}

// live reports whether any sign of s still matters at now.
func (g *recentGood) live(s *goodSlot, now int64) bool {
	return g.liveLogin(s, now) ||
		(s.accepted != 0 && now-s.accepted < g.spans.accepted) ||
		(s.mismatch != 0 && now-s.mismatch < g.spans.mismatch)
}

func (g *recentGood) liveLogin(s *goodSlot, now int64) bool {
	return s.login != 0 && now-s.login < g.spans.login
}

// find returns a's slot, or nil.
func (g *recentGood) find(a netip.Addr) *goodSlot {
	key := a.As16()
	b1, b2 := g.candidates(&key)
	for _, b := range [2]*goodBucket{b1, b2} {
		for i := range b {
			if s := &b[i]; s.addr == key && (s.login != 0 || s.accepted != 0 || s.mismatch != 0) {
				return s
			}
		}
	}
	return nil
}

// slot returns a's slot for a sign at now, taking a free one or pushing
// out older signs; nil when there is no room (login false: the sign is
// not a login and every candidate slot holds a live login).
func (g *recentGood) slot(a netip.Addr, now int64, login bool) *goodSlot {
	if s := g.find(a); s != nil {
		return s
	}
	key := a.As16()
	b1, b2 := g.candidates(&key)
	var free [2]*goodSlot
	var nfree [2]int
	var victim *goodSlot
	var victimLogin bool
	var victimAge int64
	for j, b := range [2]*goodBucket{b1, b2} {
		for i := range b {
			s := &b[i]
			if !g.live(s, now) {
				nfree[j]++
				if free[j] == nil {
					free[j] = s
				}
				continue
			}
			hasLogin := g.liveLogin(s, now)
			if !login && hasLogin {
				continue
			}
			newest := max(s.login, s.accepted, s.mismatch)
			// no live login first, then the oldest signs
			if victim == nil || (victimLogin && !hasLogin) || (victimLogin == hasLogin && newest < victimAge) {
				victim, victimLogin, victimAge = s, hasLogin, newest
			}
		}
	}
	s := free[0]
	if s == nil || (free[1] != nil && nfree[1] > nfree[0]) {
		s = free[1]
	}
	if s == nil {
		g.overflow++
		if s = victim; s == nil {
			return nil
		}
	}
	*s = goodSlot{addr: key}
	return s
}
