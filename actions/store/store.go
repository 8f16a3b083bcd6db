// Package store keeps the block list: bans, the offence history that
// escalation reads, and a ledger of every ban, extension, unban and expiry,
// in one bbolt file.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Schema is the schema version this code writes. Older files are
// migrated at open; newer ones are refused.
const Schema = 1

// Bucket and key names. The layout (schema 1):
//
//	meta      schema_version → 8-byte big-endian uint64
//	bans      prefix string ("203.0.113.7/32") → JSON Record (active or not yet swept)
//	expiry    8-byte big-endian until (unix ns) || prefix string → "" (sweep index)
//	history   prefix string → JSON History (survives expiry and unban)
//	ledger    8-byte big-endian sequence → JSON LedgerEntry (every ban, extension, unban, expiry)
//	positions log path → tail checkpoint (owned by the tailer, which keeps its
//	          read positions in the same file: see tailer.BoltCheckpoints)
var (
	bucketMeta      = []byte("meta")
	bucketBans      = []byte("bans")
	bucketExpiry    = []byte("expiry")
	bucketHistory   = []byte("history")
	bucketLedger    = []byte("ledger")
	bucketPositions = []byte("positions")
	keySchema       = []byte("schema_version")
)

// MaxLines is how many evidence lines a Record keeps.
const MaxLines = 5

// maxHistoryTimes bounds the offence times kept per prefix.
const maxHistoryTimes = 64

// Options tunes Open. The zero value is fine.
type Options struct {
	// Timeout to wait for the file lock held by another process.
	// Default 2s; negative means do not wait at all (1ns).
	Timeout time.Duration
	// NoSync skips fsync on commit (benchmarks and tests only: a crash can
	// lose or corrupt the block list).
	NoSync bool
}

// Store is the bbolt block list: the source of truth for bans, the ledger of
// every ban, the per-prefix offence history, and the daemon's tail
// checkpoints. One process at a time may hold it open (bbolt takes an
// exclusive flock); the CLI talks to the daemon instead.
type Store struct {
	db   *bolt.DB
	path string
}

// Record is one ban as stored in the bans bucket.
type Record struct {
	Prefix    netip.Prefix `json:"prefix"`
	Detector  string       `json:"detector"`
	Reason    string       `json:"reason"`
	Evidence  int          `json:"evidence"`
	Lines     []string     `json:"lines,omitempty"` // at most MaxLines raw log lines
	FirstSeen time.Time    `json:"first_seen"`
	LastSeen  time.Time    `json:"last_seen"`
	Since     time.Time    `json:"since"`
	Until     time.Time    `json:"until"`
	Offence   int          `json:"offence"`
}

// History is the per-prefix offence history; it outlives bans so that
// escalation survives expiry and unban.
type History struct {
	Prefix   netip.Prefix `json:"prefix"`
	Offences int          `json:"offences"` // total bans ever
	LastBan  time.Time    `json:"last_ban"`
	// Times of the most recent offences (oldest first, at most 64), used to
	// decay old offences (forget_after).
	Times []time.Time `json:"times,omitempty"`
}

// LedgerEntry is one line of the append-only ledger.
type LedgerEntry struct {
	Seq    uint64    `json:"seq"`
	Event  string    `json:"event"` // "ban", "extend", "unban", "expire"
	At     time.Time `json:"at"`    // since for ban/extend, the deletion time otherwise
	Record Record    `json:"record"`
}

// migrations[i] migrates schema i to i+1. All run in one Update at open.
var migrations = []func(tx *bolt.Tx) error{
	migrate0to1,
}

// migrate0to1: a version-0 file has no meta bucket and possibly a bans
// bucket without the expiry index. Create every bucket and rebuild the index.
func migrate0to1(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketBans, bucketExpiry, bucketHistory,
		bucketLedger, bucketPositions} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	bans, idx := tx.Bucket(bucketBans), tx.Bucket(bucketExpiry)
	return bans.ForEach(func(k, v []byte) error {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("bans[%s]: %w", k, err)
		}
		return idx.Put(expiryKey(r.Until, k), []byte{})
	})
}

// Open opens (creating if needed, with mode 0600, and its directory
// with 0750) the block list at path and migrates it to the current schema.
func Open(path string, opts Options) (s *Store, err error) {
	timeout := opts.Timeout
	switch {
	case timeout == 0:
		timeout = 2 * time.Second
	case timeout < 0:
		timeout = time.Nanosecond
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("store %s: create directory: %w", path, err)
	}
	defer func() {
		if p := recover(); p != nil {
			s, err = nil, fmt.Errorf("store %s is corrupt (bbolt panic: %v): move it aside to start with an empty block list", path, p)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoSync: opts.NoSync,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("database %s is locked: is the mxguard daemon running? use the control socket (mxguard list/ban/unban)", path)
		case errors.As(err, &pe):
			return nil, fmt.Errorf("store %s: %w", path, err)
		default:
			return nil, fmt.Errorf("store %s is corrupt or not a bbolt database (%w): move it aside to start with an empty block list", path, err)
		}
	}
	s = &Store{db: db, path: path}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate() error {
	return s.update(func(tx *bolt.Tx) error {
		ver := uint64(0)
		if m := tx.Bucket(bucketMeta); m != nil {
			v := m.Get(keySchema)
			if len(v) != 8 {
				return fmt.Errorf("store %s: meta/schema_version is malformed (%d bytes)", s.path, len(v))
			}
			ver = binary.BigEndian.Uint64(v)
		}
		if ver > Schema {
			return fmt.Errorf("store %s has schema version %d, newer than this mxguard supports (%d): upgrade mxguard or move the file aside", s.path, ver, Schema)
		}
		for ; ver < Schema; ver++ {
			if err := migrations[ver](tx); err != nil {
				return fmt.Errorf("store %s: migrate schema %d to %d: %w", s.path, ver, ver+1, err)
			}
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return m.Put(keySchema, binary.BigEndian.AppendUint64(nil, ver))
	})
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// SchemaVersion reads meta/schema_version.
func (s *Store) SchemaVersion() (int, error) {
	var v int
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta).Get(keySchema)
		v = int(binary.BigEndian.Uint64(b))
		return nil
	})
	return v, err
}

// DB is the open database, for the tailer's checkpoints, which live in a
// bucket of their own in the same file (one process, one lock, one fsync).
func (s *Store) DB() *bolt.DB { return s.db }

// Close closes the database and releases the lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store %s: close: %w", s.path, err)
	}
	return nil
}

// view and update run a transaction and turn a bbolt panic (seen on some
// corrupt pages) into an error naming the file.
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	defer s.storeRecover(&err)
	return s.db.View(fn)
}

func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	defer s.storeRecover(&err)
	return s.db.Update(fn)
}

func (s *Store) storeRecover(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("store %s is corrupt (bbolt panic: %v)", s.path, p)
	}
}

func prefixKey(p netip.Prefix) []byte { return []byte(p.String()) }

func expiryKey(until time.Time, key []byte) []byte {
	var ns uint64
	if n := until.UnixNano(); n > 0 {
		ns = uint64(n)
	}
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(key)), ns), key...)
}

func ledgerAppend(tx *bolt.Tx, event string, at time.Time, r Record) error {
	b := tx.Bucket(bucketLedger)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	v, err := json.Marshal(LedgerEntry{Seq: seq, Event: event, At: at, Record: r})
	if err != nil {
		return err
	}
	return b.Put(binary.BigEndian.AppendUint64(nil, seq), v)
}

func getRecord(tx *bolt.Tx, key []byte) (Record, bool, error) {
	v := tx.Bucket(bucketBans).Get(key)
	if v == nil {
		return Record{}, false, nil
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil { // Unmarshal copies: safe after the tx
		return Record{}, false, fmt.Errorf("bans[%s]: %w", key, err)
	}
	return r, true, nil
}

// Put stores r (keyed by its prefix), keeps the expiry index in step and
// appends to the ledger. It is a new offence - history counted, ledger
// event "ban" - unless a record for the prefix with the same Since and
// Offence already exists, in which case it is an extension ("extend").
// Lines beyond MaxLines are dropped (the last ones are kept).
func (s *Store) Put(r Record) error {
	if !r.Prefix.IsValid() {
		return fmt.Errorf("store %s: put: invalid prefix", s.path)
	}
	if len(r.Lines) > MaxLines {
		r.Lines = r.Lines[len(r.Lines)-MaxLines:]
	}
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("store %s: put %s: %w", s.path, r.Prefix, err)
	}
	key := prefixKey(r.Prefix)
	err = s.update(func(tx *bolt.Tx) error {
		old, exists, err := getRecord(tx, key)
		if err != nil {
			return err
		}
		idx := tx.Bucket(bucketExpiry)
		if exists {
			if err := idx.Delete(expiryKey(old.Until, key)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketBans).Put(key, val); err != nil {
			return err
		}
		if err := idx.Put(expiryKey(r.Until, key), []byte{}); err != nil {
			return err
		}
		event := "extend"
		if !exists || !old.Since.Equal(r.Since) || old.Offence != r.Offence {
			event = "ban"
			if err := addOffence(tx, r.Prefix, r.Since); err != nil {
				return err
			}
		}
		return ledgerAppend(tx, event, r.Since, r)
	})
	if err != nil {
		return fmt.Errorf("store %s: put %s: %w", s.path, r.Prefix, err)
	}
	return nil
}

func addOffence(tx *bolt.Tx, p netip.Prefix, at time.Time) error {
	b := tx.Bucket(bucketHistory)
	key := prefixKey(p)
	h := History{Prefix: p}
	if v := b.Get(key); v != nil {
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("history[%s]: %w", key, err)
		}
	}
	h.Offences++
	if at.After(h.LastBan) {
		h.LastBan = at
	}
	h.Times = append(h.Times, at)
	slices.SortFunc(h.Times, func(a, b time.Time) int { return a.Compare(b) })
	if len(h.Times) > maxHistoryTimes {
		h.Times = h.Times[len(h.Times)-maxHistoryTimes:]
	}
	v, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

// Get returns the stored record for p (which may already be past its Until
// but not yet swept).
func (s *Store) Get(p netip.Prefix) (Record, bool, error) {
	var (
		r  Record
		ok bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		r, ok, err = getRecord(tx, prefixKey(p))
		return err
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("store %s: get %s: %w", s.path, p, err)
	}
	return r, ok, nil
}

// Delete removes the ban for p (history is kept) and records "unban" in the
// ledger. It reports whether there was one.
func (s *Store) Delete(p netip.Prefix, now time.Time) (bool, error) {
	var found bool
	err := s.update(func(tx *bolt.Tx) error {
		key := prefixKey(p)
		r, ok, err := getRecord(tx, key)
		if err != nil || !ok {
			return err
		}
		found = true
		if err := tx.Bucket(bucketExpiry).Delete(expiryKey(r.Until, key)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketBans).Delete(key); err != nil {
			return err
		}
		return ledgerAppend(tx, "unban", now, r)
	})
	if err != nil {
		return false, fmt.Errorf("store %s: delete %s: %w", s.path, p, err)
	}
	return found, nil
}

// Active returns the records with Until after now, in order of Until.
func (s *Store) Active(now time.Time) ([]Record, error) {
	return s.scan(now, false)
}

// Expired returns the records with Until at or before now (not yet swept),
// in order of Until.
func (s *Store) Expired(now time.Time) ([]Record, error) {
	return s.scan(now, true)
}

// CountActive counts bans with Until after now without decoding them.
func (s *Store) CountActive(now time.Time) (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketExpiry).Cursor()
		for k, _ := c.Seek(expiryKey(now.Add(time.Nanosecond), nil)); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store %s: count: %w", s.path, err)
	}
	return n, nil
}

// ActivePrefixes lists the prefixes of the bans in force at now from the
// expiry index alone, without decoding the records (evidence lines make
// those large): cheap enough to run over 100k bans at every reload.
func (s *Store) ActivePrefixes(now time.Time) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketExpiry).Cursor()
		for k, _ := c.Seek(expiryKey(now.Add(time.Nanosecond), nil)); k != nil; k, _ = c.Next() {
			if len(k) <= 8 {
				continue
			}
			p, err := netip.ParsePrefix(string(k[8:]))
			if err != nil {
				return fmt.Errorf("expiry index key %q: %w", k[8:], err)
			}
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: active prefixes: %w", s.path, err)
	}
	return out, nil
}

func (s *Store) scan(now time.Time, expired bool) ([]Record, error) {
	var out []Record
	bound := expiryKey(now.Add(time.Nanosecond), nil) // first key with until > now
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketExpiry).Cursor()
		var k []byte
		if expired {
			k, _ = c.First()
		} else {
			k, _ = c.Seek(bound)
		}
		for ; k != nil; k, _ = c.Next() {
			if expired && bytes.Compare(k, bound) >= 0 {
				break
			}
			if len(k) < 8 {
				continue
			}
			r, ok, err := getRecord(tx, k[8:])
			if err != nil {
				return err
			}
			if ok {
				out = append(out, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: scan: %w", s.path, err)
	}
	return out, nil
}

// DeleteExpired removes every record with Until at or before now, records
// "expire" in the ledger, and returns what it removed (history is kept).
func (s *Store) DeleteExpired(now time.Time) ([]Record, error) {
	var out []Record
	bound := expiryKey(now.Add(time.Nanosecond), nil)
	err := s.update(func(tx *bolt.Tx) error {
		out = out[:0] // the function may not run twice, but keep it idempotent anyway
		c := tx.Bucket(bucketExpiry).Cursor()
		var dead [][]byte
		for k, _ := c.First(); k != nil && bytes.Compare(k, bound) < 0; k, _ = c.Next() {
			dead = append(dead, bytes.Clone(k))
		}
		for _, k := range dead {
			if err := tx.Bucket(bucketExpiry).Delete(k); err != nil {
				return err
			}
			if len(k) < 8 {
				continue
			}
			r, ok, err := getRecord(tx, k[8:])
			if err != nil {
				return err
			}
			if !ok || r.Until.After(now) { // stale index entry
				continue
			}
			if err := tx.Bucket(bucketBans).Delete(k[8:]); err != nil {
				return err
			}
			if err := ledgerAppend(tx, "expire", now, r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: sweep: %w", s.path, err)
	}
	return out, nil
}

// Prune deletes ledger entries dated before `before` (oldest first, at
// most limit of them, limit <= 0: no limit) and the history of prefixes
// whose last ban is before `before` and that have no stored ban. It
// returns how many of each it deleted.
func (s *Store) Prune(before time.Time, limit int) (ledger, history int, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		ledger, history = 0, 0
		var dead [][]byte
		c := tx.Bucket(bucketLedger).Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(dead) < limit); k, v = c.Next() {
			var e struct {
				At time.Time `json:"at"`
			}
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("ledger[%x]: %w", k, err)
			}
			if !e.At.Before(before) {
				break // the ledger is (nearly) in time order
			}
			dead = append(dead, bytes.Clone(k))
		}
		for _, k := range dead {
			if err := tx.Bucket(bucketLedger).Delete(k); err != nil {
				return err
			}
		}
		ledger = len(dead)
		dead = dead[:0]
		bans := tx.Bucket(bucketBans)
		c = tx.Bucket(bucketHistory).Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(dead) < limit); k, v = c.Next() {
			var h History
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("history[%s]: %w", k, err)
			}
			if h.LastBan.Before(before) && bans.Get(k) == nil {
				dead = append(dead, bytes.Clone(k))
			}
		}
		for _, k := range dead {
			if err := tx.Bucket(bucketHistory).Delete(k); err != nil {
				return err
			}
		}
		history = len(dead)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store %s: prune: %w", s.path, err)
	}
	return ledger, history, nil
}

// History returns the offence history of p (zero History, false if none).
func (s *Store) History(p netip.Prefix) (History, bool, error) {
	var (
		h  History
		ok bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketHistory).Get(prefixKey(p))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &h)
	})
	if err != nil {
		return History{}, false, fmt.Errorf("store %s: history %s: %w", s.path, p, err)
	}
	return h, ok, nil
}

// Ledger returns up to limit most recent ledger entries for p, newest
// first (limit <= 0: all). It scans the ledger backwards.
func (s *Store) Ledger(p netip.Prefix, limit int) ([]LedgerEntry, error) {
	var out []LedgerEntry
	want := []byte(`"prefix":"` + p.String() + `"`)
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLedger).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if !bytes.Contains(v, want) {
				continue
			}
			var e LedgerEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("ledger[%x]: %w", k, err)
			}
			if e.Record.Prefix != p {
				continue
			}
			out = append(out, e)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: ledger %s: %w", s.path, p, err)
	}
	return out, nil
}
