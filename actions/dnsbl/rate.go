package dnsbl

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a token bucket per client (an IPv4 address, or the /56
// of an IPv6 one: one host has many addresses there), in a bounded map:
// when it is full, an arbitrary bucket makes room (Go's map order), which
// at worst gives that client a fresh burst.
type rateLimiter struct {
	qps   float64
	burst float64
	max   int

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(qps float64, burst, clients int) *rateLimiter {
	return &rateLimiter{qps: qps, burst: float64(burst), max: clients, buckets: map[netip.Prefix]*bucket{}}
}

func clientKey(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(56)
	return p
}

// allow takes one token from a's bucket and reports whether there was one.
func (l *rateLimiter) allow(a netip.Addr, now time.Time) bool {
	k := clientKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= l.max {
			for victim := range l.buckets {
				delete(l.buckets, victim)
				break
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[k] = b
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt*l.qps)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
