// Package greylist is the one greylisting implementation (postgrey's
// semantics) shared by the inline SMTP guard and the policy service: one
// store per file, opened once per process, however many front doors ask.
package greylist

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"sort"
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
//	triplets.v2  key: network (16 bytes: the /24 as ::ffff:a.b.c.0, or the /64)
//	               + sha256(lower(sender) NUL lower(recipient))[:16]: 32 bytes,
//	               whatever the addresses, and grouped by network
//	             value: first seen, last seen (unix seconds, big-endian int64), passed (1 byte)
//	clients      key: network (192.0.2.0/24, 2001:db8::/64)
//	             value: last seen (int64), distinct triplets passed (uint32)
//
// The bucket "triplets" of older versions (raw addresses as keys) is
// converted once, when the file is opened.
//
// Entries unused for max_age are swept (at most every sweepEvery, from a
// goroutine started by the check that notices it is due). When the
// triplets bucket holds more than max_entries, the same sweep evicts down
// to 90%: pending triplets (not passed) first, taken from the networks
// with the most pending triplets (each trimmed to a common level), and
// only then passed triplets, least recently used first; so a flood of new
// triplets evicts its own kind, not the triplets legitimate senders have
// passed or are about to pass. A network never holds more than
// greylistMaxPendingPerNet pending triplets: a new one beyond that
// replaces the network's oldest pending one. The clients bucket (written
// only by retries the upstream accepted) is capped least recently used
// first.
var (
	bucketTriplets = []byte("triplets.v2")
	bucketClients  = []byte("clients")
	// bucketTripletsV1 is the triplets bucket of older versions, keyed by
	// network "\x00" sender "\x00" recipient.
	bucketTripletsV1 = []byte("triplets")
)

const (
	greylistSweepEvery = time.Hour
	// A passed triplet or allowlisted client seen again within touchEvery
	// of its last-seen time is not written again: busy senders cost a
	// read transaction per RCPT, not an fsync.
	greylistTouchEvery = time.Hour
	// greylistDelBatch bounds the keys a sweep (or the conversion of an
	// old file) reads, keeps or deletes per transaction.
	greylistDelBatch = 10000
	// greylistMaxPendingPerNet caps the pending triplets of one client
	// network (/24, /64). A real site gets far fewer new triplets from one
	// network within retry_window; counting them costs a cursor walk over
	// the network's entries per new triplet. (Not a config key yet.)
	greylistMaxPendingPerNet = 10000
	netKeyLen                = 16
	tripletKeyLen            = netKeyLen + 16
)

// Store keeps the triplet and client databases.
type Store struct {
	db         *bolt.DB
	cfg        Config
	log        *slog.Logger
	now        func() time.Time
	maxCount   int
	maxPending int           // per network (greylistMaxPendingPerNet; tests change it)
	every      time.Duration // sweep interval (greylistSweepEvery; tests change it)
	batch      int           // entries per sweep transaction (greylistDelBatch; tests change it)

	mu        sync.Mutex
	lastSweep time.Time
	inserted  atomic.Int64 // new triplets since the last sweep began
	sweeping  atomic.Bool
	wg        sync.WaitGroup
	closed    atomic.Bool
}

// Verdict is the outcome of one check.
type Verdict struct {
	Pass   bool
	Wait   time.Duration // until a retry passes (when !Pass)
	Reason string        // for logs: "new", "early", "expired", "passed", "retry", "client"
	// Delayed is how long ago the triplet was first seen, for a retry
	// that passes (postgrey's X-Greylist header).
	Delayed time.Duration
	// Retry is set for a retry that may pass: it is recorded as passed
	// (and counted toward auto_allowlist) only by commit, once the
	// upstream has accepted the recipient, so that retries to addresses
	// Postfix refuses never allowlist anything.
	Retry *Retry
}

// Retry is a retry to record with Commit.
type Retry struct {
	network string
	key     []byte
}

// Share is the store a front door greylists with: shared when the
// daemon hands one over (the guard and the policy service use one file),
// else its own, opened here; owned says whether the caller must close it.
func Share(shared *Store, cfg Config, log *slog.Logger, now func() time.Time) (st *Store, owned bool, err error) {
	if shared != nil {
		return shared, false, nil
	}
	st, err = Open(cfg, log, now)
	return st, err == nil, err
}

// Open opens (or creates) the store in cfg.DB. It holds the file's lock
// until Close: open it once per process and share the *Store.
func Open(cfg Config, log *slog.Logger, now func() time.Time) (*Store, error) {
	if cfg.DB == "" {
		return nil, errors.New("greylist.db: no file set")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	db, err := bolt.Open(cfg.DB, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("greylist.db: open %s: %w", cfg.DB, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTriplets, bucketClients} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = convertTripletsV1(db, log)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("greylist.db: %s: %w", cfg.DB, err)
	}
	gl := &Store{db: db, cfg: cfg, log: log, now: now, maxCount: cfg.MaxEntries,
		maxPending: greylistMaxPendingPerNet, every: greylistSweepEvery, batch: greylistDelBatch}
	gl.lastSweep = now()
	return gl, nil
}

// convertTripletsV1 moves the triplets of an older file (raw addresses as
// keys) to the hashed keys, greylistDelBatch per transaction, and drops
// the old bucket. Entries it cannot parse are dropped.
func convertTripletsV1(db *bolt.DB, log *slog.Logger) error {
	moved := 0
	for {
		done := false
		err := db.Update(func(tx *bolt.Tx) error {
			old := tx.Bucket(bucketTripletsV1)
			if old == nil {
				done = true
				return nil
			}
			nb := tx.Bucket(bucketTriplets)
			var keys [][]byte
			c := old.Cursor()
			for k, v := c.First(); k != nil && len(keys) < greylistDelBatch; k, v = c.Next() {
				keys = append(keys, bytes.Clone(k)) // deleted below
				parts := strings.SplitN(string(k), "\x00", 3)
				if len(parts) != 3 {
					continue
				}
				p, err := netip.ParsePrefix(parts[0])
				if _, ok := parseTriplet(v); err != nil || !ok {
					continue
				}
				if err := nb.Put(tripletKey(netKey(p), NormalizeSender(parts[1]), parts[2]), v); err != nil {
					return err
				}
				moved++
			}
			if len(keys) == 0 {
				done = true
				return tx.DeleteBucket(bucketTripletsV1)
			}
			for _, k := range keys {
				if err := old.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("converting old triplets: %w", err)
		}
		if done {
			if moved > 0 {
				log.Info("greylist: converted triplets to hashed keys", "n", moved)
			}
			return nil
		}
	}
}

// Close waits for a running sweep and closes the file; nil-safe.
func (gl *Store) Close() error {
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

// greyPrefix is the client network of a triplet: /24 for IPv4, /64 for IPv6.
func greyPrefix(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits) // fails only for the zero Addr
	return p
}

// greyNet is greyPrefix as text: the key of the clients bucket.
func greyNet(ip netip.Addr) string {
	p := greyPrefix(ip)
	if !p.IsValid() {
		return ip.String()
	}
	return p.String()
}

// netKey is the 16-byte form of a network (IPv4 as ::ffff:a.b.c.0, which
// no /64 can equal: their low 64 bits are zero).
func netKey(p netip.Prefix) []byte {
	a := p.Masked().Addr().As16()
	return a[:]
}

// tripletKey is netKey + 16 bytes of sha256(lower(from) NUL lower(to)):
// tripletKeyLen bytes, however long the addresses.
func tripletKey(network []byte, from, to string) []byte {
	h := sha256.Sum256([]byte(strings.ToLower(from) + "\x00" + strings.ToLower(to)))
	k := make([]byte, 0, tripletKeyLen)
	k = append(k, network[:netKeyLen]...)
	return append(k, h[:tripletKeyLen-netKeyLen]...)
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

// Check decides one RCPT. An error means the database failed; the caller
// lets the recipient through (greylisting fails open).
func (gl *Store) Check(ip netip.Addr, from, to string) (Verdict, error) {
	now := gl.now()
	gl.maybeSweep(now)
	t := now.Unix()
	network := greyNet(ip)
	nk := netKey(greyPrefix(ip))
	key := tripletKey(nk, NormalizeSender(from), to)
	maxAge := int64(gl.cfg.MaxAge.D() / time.Second)
	delay := int64(gl.cfg.Delay.D() / time.Second)
	window := int64(gl.cfg.RetryWindow.D() / time.Second)
	touch := int64(greylistTouchEvery / time.Second)
	auto := gl.cfg.AutoAllowlist

	// Fast path, read only: a known client or a passed triplet seen
	// lately, or a retry too early (nothing to record: the sweep and the
	// window go by the first attempt).
	var out Verdict
	var fast bool
	err := gl.db.View(func(tx *bolt.Tx) error {
		if auto > 0 {
			if c, ok := parseClient(tx.Bucket(bucketClients).Get([]byte(network))); ok &&
				c.passes >= uint32(auto) && t-c.last <= maxAge && t-c.last < touch {
				fast, out = true, Verdict{Pass: true, Reason: "passed"}
				return nil
			}
		}
		v, ok := parseTriplet(tx.Bucket(bucketTriplets).Get(key))
		switch {
		case !ok:
		case v.passed && t-v.last <= maxAge && t-v.last < touch:
			fast, out = true, Verdict{Pass: true, Reason: "passed"}
		case !v.passed && t-v.first < delay && t >= v.first &&
			(auto <= 0 || !clientAllowed(tx, network, auto, t, maxAge)):
			fast, out = true, Verdict{Wait: time.Duration(delay-(t-v.first)) * time.Second, Reason: "early"}
		}
		return nil
	})
	if err != nil {
		return Verdict{Pass: true}, fmt.Errorf("greylist: %w", err)
	}
	if fast {
		return out, nil
	}

	err = gl.db.Batch(func(tx *bolt.Tx) error {
		tb, cb := tx.Bucket(bucketTriplets), tx.Bucket(bucketClients)
		c, cok := parseClient(cb.Get([]byte(network)))
		if cok && t-c.last > maxAge {
			c, cok = clientVal{}, false
		}
		if auto > 0 && cok && c.passes >= uint32(auto) {
			c.last = t
			out = Verdict{Pass: true, Reason: "client"}
			return cb.Put([]byte(network), c.bytes())
		}
		v, ok := parseTriplet(tb.Get(key))
		switch {
		case !ok:
			out = Verdict{Wait: time.Duration(delay) * time.Second, Reason: "new"}
			v = tripletVal{first: t, last: t}
			if err := gl.capNetwork(tb, nk, key); err != nil {
				return err
			}
			gl.inserted.Add(1) // may count twice if Batch reruns this: harmless
		case v.passed && t-v.last <= maxAge:
			out = Verdict{Pass: true, Reason: "passed"}
			v.last = t
		case v.passed || t-v.first > window:
			// unused too long, or the retry came too late: start over
			out = Verdict{Wait: time.Duration(delay) * time.Second, Reason: "expired"}
			v = tripletVal{first: t, last: t}
		case t-v.first < delay:
			// early: nothing to record (see the fast path)
			out = Verdict{Wait: time.Duration(delay-(t-v.first)) * time.Second, Reason: "early"}
			return nil
		default:
			// a retry in the window: pass it, record it in commit
			out = Verdict{Pass: true, Reason: "retry", Delayed: time.Duration(t-v.first) * time.Second,
				Retry: &Retry{network: network, key: key}}
			return nil
		}
		return tb.Put(key, v.bytes())
	})
	if err != nil {
		return Verdict{Pass: true}, fmt.Errorf("greylist: %w", err)
	}
	return out, nil
}

// clientAllowed reports whether network is auto-allowlisted (and not
// expired): then an early retry is the Batch path's business.
func clientAllowed(tx *bolt.Tx, network string, auto int, t, maxAge int64) bool {
	c, ok := parseClient(tx.Bucket(bucketClients).Get([]byte(network)))
	return ok && c.passes >= uint32(auto) && t-c.last <= maxAge
}

// capNetwork makes room for one more pending triplet of network nk (key
// is the new one): beyond gl.maxPending it deletes the network's oldest
// pending triplets. It walks the network's keys with a cursor, so its
// cost is bounded by the cap.
func (gl *Store) capNetwork(tb *bolt.Bucket, nk, key []byte) error {
	if gl.maxPending <= 0 {
		return nil
	}
	type pend struct {
		k     []byte
		first int64
	}
	var pending []pend
	c := tb.Cursor()
	for k, v := c.Seek(nk); k != nil && bytes.HasPrefix(k, nk); k, v = c.Next() {
		if tv, ok := parseTriplet(v); ok && !tv.passed && !bytes.Equal(k, key) {
			pending = append(pending, pend{k, tv.first}) // k valid until we write
		}
	}
	over := len(pending) - gl.maxPending + 1
	if over <= 0 {
		return nil
	}
	slices.SortFunc(pending, func(a, b pend) int { return cmp.Compare(a.first, b.first) })
	victims := make([][]byte, over)
	for i := range victims {
		victims[i] = bytes.Clone(pending[i].k)
	}
	for _, k := range victims {
		if err := tb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Commit records a retried triplet as passed once the upstream accepted
// the recipient; credit also counts it toward the network's
// auto_allowlist (once per session, not once per recipient).
func (gl *Store) Commit(r *Retry, credit bool) error {
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
func (gl *Store) maybeSweep(now time.Time) {
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
			gl.log.Warn("greylist: sweep", "err", err)
		} else if n > 0 {
			gl.log.Info("greylist: sweep", "deleted", n)
		}
	}()
}

// walk calls fn on every entry of bucket in key order, gl.batch entries
// per transaction (so it never holds a long read transaction nor
// all keys in memory). With write set, each chunk is an update
// transaction and the entries fn returns true for are deleted in it.
func (gl *Store) walk(bucket []byte, write bool, fn func(k, v []byte) bool) (int, error) {
	var resume []byte
	deleted := 0
	for {
		done := false
		chunk := func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			c := b.Cursor()
			var k, v []byte
			if resume == nil {
				k, v = c.First()
			} else if k, v = c.Seek(resume); bytes.Equal(k, resume) {
				k, v = c.Next()
			}
			var del [][]byte
			n := 0
			for ; k != nil && n < gl.batch; k, v = c.Next() {
				n++
				resume = k
				if fn(k, v) && write {
					del = append(del, k)
				}
			}
			done = k == nil
			resume = bytes.Clone(resume)
			for i := range del {
				del[i] = bytes.Clone(del[i]) // before the first write moves pages
			}
			for _, k := range del {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			deleted += len(del)
			return nil
		}
		var err error
		if write {
			err = gl.db.Update(chunk)
		} else {
			err = gl.db.View(chunk)
		}
		if err != nil {
			return deleted, err
		}
		if done {
			return deleted, nil
		}
	}
}

// sweep deletes entries unused for max_age, triplets not passed whose
// retry window has closed, and the entries beyond max_entries in each
// bucket (see the top of this file for which go first). It returns how
// many it deleted.
func (gl *Store) sweep(now time.Time) (int, error) {
	t := now.Unix()
	maxAge := int64(gl.cfg.MaxAge.D() / time.Second)
	window := int64(gl.cfg.RetryWindow.D() / time.Second)
	total := 0
	n, err := gl.sweepTriplets(t, maxAge, window)
	total += n
	if err != nil {
		return total, fmt.Errorf("greylist sweep: %w", err)
	}
	n, err = gl.sweepClients(t, maxAge)
	total += n
	if err != nil {
		return total, fmt.Errorf("greylist sweep: %w", err)
	}
	return total, nil
}

func (gl *Store) sweepTriplets(t, maxAge, window int64) (int, error) {
	// classify parses an entry and says whether it is live (not stale)
	classify := func(k, v []byte) (tripletVal, bool) {
		tv, ok := parseTriplet(v)
		if !ok || len(k) != tripletKeyLen {
			return tv, false
		}
		if t-tv.last > maxAge || !tv.passed && t-tv.first > window {
			return tv, false
		}
		return tv, true
	}
	// Pass 1 (read only): is anything stale; the pending count of each
	// network (keys are grouped by network) and the last-seen times of
	// passed triplets, for the cap.
	var (
		stale   bool
		counts  []int // pending triplets per network that has any
		lasts   []int64
		pending int
		curNet  [netKeyLen]byte
		curN    int
	)
	flush := func() {
		if curN > 0 {
			counts = append(counts, curN)
		}
		curN = 0
	}
	_, err := gl.walk(bucketTriplets, false, func(k, v []byte) bool {
		tv, live := classify(k, v)
		if !live {
			stale = true
			return false
		}
		if !tv.passed {
			if !bytes.Equal(k[:netKeyLen], curNet[:]) {
				flush()
				copy(curNet[:], k)
			}
			curN++
			pending++
		} else if gl.maxCount > 0 {
			lasts = append(lasts, tv.last)
		}
		return false
	})
	flush()
	if err != nil {
		return 0, err
	}
	// What the cap evicts: pending triplets beyond level per network
	// (level -1: none), then passed ones last seen before cutoff, and
	// ties of those seen at cutoff.
	level, cutoff, ties := -1, int64(math.MinInt64), 0
	if live := pending + len(lasts); gl.maxCount > 0 && live > gl.maxCount {
		evict := live - gl.maxCount*9/10
		if evict <= pending {
			// the highest level that evicts enough: trimming networks
			// with the most pending triplets first
			slices.Sort(counts)
			level = sort.Search(counts[len(counts)-1]+1, func(l int) bool {
				return overLevel(counts, l) < evict
			}) - 1
		} else {
			level = 0
			evict -= pending
			slices.Sort(lasts)
			cutoff = lasts[evict-1]
			ties = evict
			for _, l := range lasts[:evict] {
				if l < cutoff {
					ties--
				}
			}
		}
	}
	if !stale && level < 0 {
		return 0, nil
	}
	// Pass 2: delete, chunk by chunk; entries are judged again as they are
	// now (one used since pass 1 may stay).
	curN = 0
	clear(curNet[:])
	return gl.walk(bucketTriplets, true, func(k, v []byte) bool {
		tv, live := classify(k, v)
		switch {
		case !live:
			return true
		case !tv.passed:
			if !bytes.Equal(k[:netKeyLen], curNet[:]) {
				copy(curNet[:], k)
				curN = 0
			}
			curN++
			return level >= 0 && curN > level
		case tv.last < cutoff:
			return true
		case tv.last == cutoff && ties > 0:
			ties--
			return true
		}
		return false
	})
}

// overLevel is how many pending triplets trimming every network to level
// evicts (counts sorted).
func overLevel(counts []int, level int) int {
	n := 0
	for i := len(counts) - 1; i >= 0 && counts[i] > level; i-- {
		n += counts[i] - level
	}
	return n
}

// sweepClients deletes clients unused for max_age and, beyond the cap,
// the least recently used.
func (gl *Store) sweepClients(t, maxAge int64) (int, error) {
	lastOf := func(v []byte) (int64, bool) {
		cv, ok := parseClient(v)
		return cv.last, ok && t-cv.last <= maxAge
	}
	var stale bool
	var lasts []int64
	_, err := gl.walk(bucketClients, false, func(_, v []byte) bool {
		last, live := lastOf(v)
		if !live {
			stale = true
		} else if gl.maxCount > 0 {
			lasts = append(lasts, last)
		}
		return false
	})
	if err != nil {
		return 0, err
	}
	cutoff, ties := int64(math.MinInt64), 0
	if gl.maxCount > 0 && len(lasts) > gl.maxCount {
		slices.Sort(lasts)
		evict := len(lasts) - gl.maxCount*9/10
		cutoff, ties = lasts[evict-1], evict
		for _, l := range lasts[:evict] {
			if l < cutoff {
				ties--
			}
		}
	} else if !stale {
		return 0, nil
	}
	return gl.walk(bucketClients, true, func(_, v []byte) bool {
		last, live := lastOf(v)
		switch {
		case !live || last < cutoff:
			return true
		case last == cutoff && ties > 0:
			ties--
			return true
		}
		return false
	})
}

// Reply is the answer to a greylisted recipient. The text must
// start with "Greylisted" after the class: event.Classify, which the log
// parser and the guard both use, classes it as greylisting, which is not
// evidence of abuse.
func Reply(to, url string, wait time.Duration) string {
	secs := int64((wait + time.Second - 1) / time.Second)
	return fmt.Sprintf("450 4.2.0 <%s>: Recipient address rejected: Greylisted, see %s (try again in %d s)", to, url, secs)
}
