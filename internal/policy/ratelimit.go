package policy

import (
	"container/list"
	"sync"
	"time"
)

// rateLimiter counts per key (sasl user, sender or client) against a
// list of [count, window] limits, like policyd-rate-limit. Each window is
// a sliding-window counter (the current fixed window plus the previous
// one weighted by how much of it still overlaps), two numbers per limit
// instead of a timestamp per message. At most maxKeys keys are kept; the
// least recently used is forgotten first (it then starts from zero,
// which errs toward letting mail through).
type rateLimiter struct {
	limits []RateLimit
	max    int

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // front: most recently used
}

type rateEntry struct {
	key  string
	wins []rateWindow
}

type rateWindow struct {
	start     int64 // unix nanoseconds where the current fixed window began
	cur, prev int
}

func newRateLimiter(limits []RateLimit, maxKeys int) *rateLimiter {
	return &rateLimiter{limits: limits, max: maxKeys, m: make(map[string]*list.Element)}
}

// estimate is the count in the sliding window ending at now.
func (w *rateWindow) estimate(now int64, size int64) float64 {
	w.roll(now, size)
	frac := float64(now-w.start) / float64(size)
	return float64(w.prev)*(1-frac) + float64(w.cur)
}

func (w *rateWindow) roll(now, size int64) {
	switch d := now - w.start; {
	case d < size:
	case d < 2*size:
		w.prev, w.cur = w.cur, 0
		w.start += size
	default:
		w.prev, w.cur = 0, 0
		w.start = now - d%size
	}
}

// entry returns key's entry (making it, and evicting beyond max), most
// recently used. Call with mu held.
func (r *rateLimiter) entry(key string, now int64) *rateEntry {
	if el, ok := r.m[key]; ok {
		r.lru.MoveToFront(el)
		return el.Value.(*rateEntry)
	}
	for r.lru.Len() >= r.max {
		old := r.lru.Back()
		r.lru.Remove(old)
		delete(r.m, old.Value.(*rateEntry).key)
	}
	e := &rateEntry{key: key, wins: make([]rateWindow, len(r.limits))}
	for i := range e.wins {
		e.wins[i].start = now
	}
	r.m[key] = r.lru.PushFront(e)
	return e
}

// over reports the first limit that n more would exceed (ok false: none).
func (r *rateLimiter) over(key string, n int, now time.Time) (RateLimit, bool) {
	t := now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.m[key]
	if !ok {
		for _, l := range r.limits {
			if n > l.Count {
				return l, true
			}
		}
		return RateLimit{}, false
	}
	e := el.Value.(*rateEntry)
	for i, l := range r.limits {
		if e.wins[i].estimate(t, int64(l.Window))+float64(n) > float64(l.Count) {
			return l, true
		}
	}
	return RateLimit{}, false
}

// tryAdd counts n for key unless that would exceed a limit, in one
// step: two requests at once cannot both pass the last free slot. It
// returns the limit that refused (over true; nothing counted).
func (r *rateLimiter) tryAdd(key string, n int, now time.Time) (RateLimit, bool) {
	t := now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	var e *rateEntry
	if el, ok := r.m[key]; ok {
		e = el.Value.(*rateEntry)
	}
	for i, l := range r.limits {
		est := 0.0
		if e != nil {
			est = e.wins[i].estimate(t, int64(l.Window))
		}
		if est+float64(n) > float64(l.Count) {
			return l, true
		}
	}
	e = r.entry(key, t)
	for i, l := range r.limits {
		e.wins[i].roll(t, int64(l.Window))
		e.wins[i].cur += n
	}
	return RateLimit{}, false
}

// refund takes back n counted for key at countedAt (a recipient a later
// check deferred: it will be asked again). Counts in windows that have
// since passed are left alone.
func (r *rateLimiter) refund(key string, n int, countedAt, now time.Time) {
	t, at := now.UnixNano(), countedAt.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.m[key]
	if !ok {
		return
	}
	e := el.Value.(*rateEntry)
	for i, l := range r.limits {
		w := &e.wins[i]
		w.roll(t, int64(l.Window))
		switch {
		case at >= w.start:
			w.cur = max(w.cur-n, 0)
		case at >= w.start-int64(l.Window):
			w.prev = max(w.prev-n, 0)
		}
	}
}

// add counts n for key.
func (r *rateLimiter) add(key string, n int, now time.Time) {
	t := now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entry(key, t)
	for i, l := range r.limits {
		e.wins[i].roll(t, int64(l.Window))
		e.wins[i].cur += n
	}
}

// keys is how many keys are kept now.
func (r *rateLimiter) keys() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
