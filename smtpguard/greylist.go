package smtpguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Greylisting (like postgrey): the first delivery attempt for a triplet
// (client network, sender, recipient) is deferred with 450; a retry after
// delay and within retry_window passes, and so does every later delivery
// of that triplet until it has gone unused for max_age. Real MTAs retry;
// most spam bots do not.
//
// State lives in its own bbolt file (never the daemon's mxguard.db, whose
// single writer lock would make every RCPT wait for ban bookkeeping):
//
//	triplets  key: network "\x00" sender "\x00" recipient (lower case)
//	          value: first seen, last seen (unix seconds, big-endian int64), passed (1 byte)
//	clients   key: network (192.0.2.0/24, 2001:db8::/64)
//	          value: last seen (int64), distinct triplets passed (uint32)
//
// Entries unused for max_age are swept (at most every sweepEvery, from a
// goroutine started by the check that notices it is due); when a bucket
// holds more than max_entries, the least recently used are evicted by the
// same sweep.
var (
	bucketTriplets = []byte("triplets")
	bucketClients  = []byte("clients")
)

const (
	greylistSweepEvery = time.Hour
	// A passed triplet or allowlisted client seen again within touchEvery
	// of its last-seen time is not written again: busy senders cost a
	// read transaction per RCPT, not an fsync.
	greylistTouchEvery = time.Hour
	greylistDelBatch   = 10000
)

// greylister keeps the triplet and client databases.
type greylister struct {
	db       *bolt.DB
	cfg      GreylistConfig
	log      *slog.Logger
	now      func() time.Time
	maxCount int
	every    time.Duration // sweep interval (greylistSweepEvery; tests change it)

	mu        sync.Mutex
	lastSweep time.Time
	inserted  atomic.Int64 // new triplets since the last sweep began
	sweeping  atomic.Bool
	wg        sync.WaitGroup
	closed    atomic.Bool
}

// greyVerdict is the outcome of one check.
type greyVerdict struct {
	pass   bool
	wait   time.Duration // until a retry passes (when !pass)
	reason string        // for logs: "new", "early", "expired", "passed", "retry", "client"
	// retry is set for a retry that may pass: it is recorded as passed
	// (and counted toward auto_allowlist) only by commit, once the
	// upstream has accepted the recipient, so that retries to addresses
	// Postfix refuses never allowlist anything.
	retry *greyRetry
}

type greyRetry struct {
	network string
	key     []byte
}

func openGreylist(cfg GreylistConfig, log *slog.Logger, now func() time.Time) (*greylister, error) {
	if cfg.DB == "" {
		return nil, errors.New("guard.greylist.db: no file set")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	db, err := bolt.Open(cfg.DB, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("guard.greylist.db: open %s: %w", cfg.DB, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTriplets, bucketClients} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("guard.greylist.db: %s: %w", cfg.DB, err)
	}
	gl := &greylister{db: db, cfg: cfg, log: log, now: now, maxCount: cfg.MaxEntries, every: greylistSweepEvery}
	gl.lastSweep = now()
	return gl, nil
}

func (gl *greylister) close() error {
	if gl == nil {
		return nil
	}
	gl.mu.Lock() // no sweep may start after this (see maybeSweep)
	first := gl.closed.CompareAndSwap(false, true)
	gl.mu.Unlock()
	if !first {
		return nil
	}
	gl.wg.Wait()
	return gl.db.Close()
}

// greyNet is the client network of a triplet: /24 for IPv4, /64 for IPv6.
func greyNet(ip netip.Addr) string {
	ip = ip.Unmap()
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ip.String()
	}
	return p.String()
}

func tripletKey(network, from, to string) []byte {
	return []byte(network + "\x00" + strings.ToLower(from) + "\x00" + strings.ToLower(to))
}

type tripletVal struct {
	first, last int64
	passed      bool
}

func (v tripletVal) bytes() []byte {
	b := make([]byte, 17)
	binary.BigEndian.PutUint64(b, uint64(v.first))
	binary.BigEndian.PutUint64(b[8:], uint64(v.last))
	if v.passed {
		b[16] = 1
	}
	return b
}

func parseTriplet(b []byte) (tripletVal, bool) {
	if len(b) != 17 {
		return tripletVal{}, false
	}
	return tripletVal{first: int64(binary.BigEndian.Uint64(b)), last: int64(binary.BigEndian.Uint64(b[8:])), passed: b[16] == 1}, true
}

type clientVal struct {
	last   int64
	passes uint32
}

func (v clientVal) bytes() []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b, uint64(v.last))
	binary.BigEndian.PutUint32(b[8:], v.passes)
	return b
}

func parseClient(b []byte) (clientVal, bool) {
	if len(b) != 12 {
		return clientVal{}, false
	}
	return clientVal{last: int64(binary.BigEndian.Uint64(b)), passes: binary.BigEndian.Uint32(b[8:])}, true
}

// check decides one RCPT. An error means the database failed; the caller
// lets the recipient through (greylisting fails open).
func (gl *greylister) check(ip netip.Addr, from, to string) (greyVerdict, error) {
	now := gl.now()
	gl.maybeSweep(now)
	t := now.Unix()
	network := greyNet(ip)
	key := tripletKey(network, from, to)
	maxAge := int64(gl.cfg.MaxAge.D() / time.Second)
	delay := int64(gl.cfg.Delay.D() / time.Second)
	window := int64(gl.cfg.RetryWindow.D() / time.Second)
	touch := int64(greylistTouchEvery / time.Second)
	auto := gl.cfg.AutoAllowlist

	// Fast path, read only: a known client or a passed triplet seen lately.
	var fast bool
	err := gl.db.View(func(tx *bolt.Tx) error {
		if auto > 0 {
			if c, ok := parseClient(tx.Bucket(bucketClients).Get([]byte(network))); ok &&
				c.passes >= uint32(auto) && t-c.last <= maxAge && t-c.last < touch {
				fast = true
				return nil
			}
		}
		if v, ok := parseTriplet(tx.Bucket(bucketTriplets).Get(key)); ok && v.passed && t-v.last <= maxAge && t-v.last < touch {
			fast = true
		}
		return nil
	})
	if err != nil {
		return greyVerdict{pass: true}, fmt.Errorf("greylist: %w", err)
	}
	if fast {
		return greyVerdict{pass: true, reason: "passed"}, nil
	}

	var out greyVerdict
	err = gl.db.Batch(func(tx *bolt.Tx) error {
		tb, cb := tx.Bucket(bucketTriplets), tx.Bucket(bucketClients)
		c, cok := parseClient(cb.Get([]byte(network)))
		if cok && t-c.last > maxAge {
			c, cok = clientVal{}, false
		}
		if auto > 0 && cok && c.passes >= uint32(auto) {
			c.last = t
			out = greyVerdict{pass: true, reason: "client"}
			return cb.Put([]byte(network), c.bytes())
		}
		v, ok := parseTriplet(tb.Get(key))
		switch {
		case !ok:
			out = greyVerdict{wait: time.Duration(delay) * time.Second, reason: "new"}
			v = tripletVal{first: t, last: t}
			gl.inserted.Add(1) // may count twice if Batch reruns this: harmless
		case v.passed && t-v.last <= maxAge:
			out = greyVerdict{pass: true, reason: "passed"}
			v.last = t
		case v.passed || t-v.first > window:
			// unused too long, or the retry came too late: start over
			out = greyVerdict{wait: time.Duration(delay) * time.Second, reason: "expired"}
			v = tripletVal{first: t, last: t}
		case t-v.first < delay:
			out = greyVerdict{wait: time.Duration(delay-(t-v.first)) * time.Second, reason: "early"}
			v.last = t
		default:
			// a retry in the window: pass it, record it in commit
			out = greyVerdict{pass: true, reason: "retry", retry: &greyRetry{network: network, key: key}}
			return nil
		}
		return tb.Put(key, v.bytes())
	})
	if err != nil {
		return greyVerdict{pass: true}, fmt.Errorf("greylist: %w", err)
	}
	return out, nil
}

// commit records a retried triplet as passed once the upstream accepted
// the recipient; credit also counts it toward the network's
// auto_allowlist (once per session, not once per recipient).
func (gl *greylister) commit(r *greyRetry, credit bool) error {
	t := gl.now().Unix()
	err := gl.db.Batch(func(tx *bolt.Tx) error {
		tb, cb := tx.Bucket(bucketTriplets), tx.Bucket(bucketClients)
		v, ok := parseTriplet(tb.Get(r.key))
		if !ok {
			v = tripletVal{first: t}
		}
		v.passed, v.last = true, t
		if err := tb.Put(r.key, v.bytes()); err != nil {
			return err
		}
		if !credit || gl.cfg.AutoAllowlist <= 0 {
			return nil
		}
		c, _ := parseClient(cb.Get([]byte(r.network)))
		c.last = t
		if c.passes < ^uint32(0) {
			c.passes++
		}
		return cb.Put([]byte(r.network), c.bytes())
	})
	if err != nil {
		return fmt.Errorf("greylist: %w", err)
	}
	return nil
}

// maybeSweep starts a sweep in the background when one is due.
func (gl *greylister) maybeSweep(now time.Time) {
	gl.mu.Lock()
	due := now.Sub(gl.lastSweep) >= gl.every ||
		gl.maxCount > 0 && gl.inserted.Load() >= int64(max(gl.maxCount/10, 1000))
	if due {
		gl.lastSweep = now
		gl.inserted.Store(0)
	}
	// checked and counted under mu, so close cannot slip in between
	start := due && !gl.closed.Load() && gl.sweeping.CompareAndSwap(false, true)
	if start {
		gl.wg.Add(1)
	}
	gl.mu.Unlock()
	if !start {
		return
	}
	go func() {
		defer gl.wg.Done()
		defer gl.sweeping.Store(false)
		if n, err := gl.sweep(now); err != nil {
			gl.log.Warn("guard: greylist sweep", "err", err)
		} else if n > 0 {
			gl.log.Info("guard: greylist sweep", "deleted", n)
		}
	}()
}

// sweep deletes entries unused for max_age, triplets not passed whose
// retry window has closed, and the oldest entries beyond max_entries in
// each bucket. It returns how many it deleted.
func (gl *greylister) sweep(now time.Time) (int, error) {
	t := now.Unix()
	maxAge := int64(gl.cfg.MaxAge.D() / time.Second)
	window := int64(gl.cfg.RetryWindow.D() / time.Second)
	total := 0
	for _, bucket := range [][]byte{bucketTriplets, bucketClients} {
		lastOf := func(v []byte) (last int64, stale bool) {
			if bytes.Equal(bucket, bucketTriplets) {
				tv, ok := parseTriplet(v)
				if !ok {
					return 0, true
				}
				return tv.last, t-tv.last > maxAge || !tv.passed && t-tv.first > window
			}
			cv, ok := parseClient(v)
			if !ok {
				return 0, true
			}
			return cv.last, t-cv.last > maxAge
		}
		// Pass 1 (read only): stale keys, and the last-seen times of the
		// others for the size cap.
		type victim struct {
			k     []byte
			last  int64
			evict bool // live but beyond the cap
		}
		var del []victim
		var lasts []int64
		err := gl.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
				last, stale := lastOf(v)
				if stale {
					del = append(del, victim{k: bytes.Clone(k), last: last})
				} else if gl.maxCount > 0 {
					lasts = append(lasts, last)
				}
				return nil
			})
		})
		if err != nil {
			return total, fmt.Errorf("greylist sweep: %w", err)
		}
		if gl.maxCount > 0 && len(lasts) > gl.maxCount {
			// Oldest first, down to 90% of the cap so that the next sweep
			// is not due at once: all entries older than cutoff, and as
			// many as needed of those last seen at cutoff itself.
			slices.Sort(lasts)
			evict := len(lasts) - gl.maxCount*9/10
			cutoff := lasts[evict-1]
			ties := evict
			for _, l := range lasts[:evict] {
				if l < cutoff {
					ties--
				}
			}
			err = gl.db.View(func(tx *bolt.Tx) error {
				return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
					last, stale := lastOf(v)
					if stale || last > cutoff {
						return nil
					}
					if last == cutoff {
						if ties == 0 {
							return nil
						}
						ties--
					}
					del = append(del, victim{k: bytes.Clone(k), last: last, evict: true})
					return nil
				})
			})
			if err != nil {
				return total, fmt.Errorf("greylist sweep: %w", err)
			}
		}
		// Pass 2: delete in batches, checking each entry again: one used
		// since pass 1 stays.
		for len(del) > 0 {
			n := min(len(del), greylistDelBatch)
			chunk := del[:n]
			del = del[n:]
			err := gl.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucket)
				for _, d := range chunk {
					v := b.Get(d.k)
					if v == nil {
						continue
					}
					if last, stale := lastOf(v); !stale && !(d.evict && last <= d.last) {
						continue
					}
					if err := b.Delete(d.k); err != nil {
						return err
					}
					total++
				}
				return nil
			})
			if err != nil {
				return total, fmt.Errorf("greylist sweep: %w", err)
			}
		}
	}
	return total, nil
}

// greylistReply is the answer to a greylisted recipient. The text must
// contain "Greylisted": logparse (and classifyUpstream) class it as
// greylisting, which is not evidence of abuse.
func greylistReply(to, url string, wait time.Duration) string {
	secs := int64((wait + time.Second - 1) / time.Second)
	return fmt.Sprintf("450 4.2.0 <%s>: Recipient address rejected: Greylisted, see %s (try again in %d s)", to, url, secs)
}
