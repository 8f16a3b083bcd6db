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
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Schema is the schema version this code writes. Older files are
// migrated at open; newer ones are refused.
const Schema = 2

// Bucket and key names. The layout (schema 2):
//
//	meta      schema_version → 8-byte big-endian uint64
//	records   expiry key → binary Record without its Lines (see appendRecord):
//	          every stored ban, active or not yet swept, in order of Until,
//	          so that Active and the sweep are one sequential walk
//	prefixes  prefix string ("203.0.113.7/32") → 8-byte big-endian Until
//	          (Unix ns), which with the prefix makes the ban's expiry key
//	lines     prefix string → the ban's evidence lines (see appendLines);
//	          no key when it has none. Apart so that Active does not read them.
//	history   prefix string → JSON History (survives expiry and unban)
//	ledger    8-byte big-endian sequence → JSON LedgerEntry, Record with its
//	          Lines (every ban, extension, unban, expiry)
//	positions log path → tail checkpoint (owned by the tailer, which keeps its
//	          read positions in the same file: see tailer.BoltCheckpoints)
//
// An expiry key is the 8-byte big-endian Until (Unix ns) followed by the
// prefix string. Schema 1 kept JSON Records, lines included, in a bans
// bucket (prefix → Record) and an expiry bucket (expiry key → "") as the
// sweep index; records and prefixes replace both.
var (
	bucketMeta      = []byte("meta")
	bucketRecords   = []byte("records")
	bucketPrefixes  = []byte("prefixes")
	bucketLines     = []byte("lines")
	bucketBansV1    = []byte("bans")
	bucketExpiryV1  = []byte("expiry")
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
	temp bool // a private copy in a directory of its own (OpenCopy): removed by Close
}

// Record is one ban. Active returns it without Lines; Get fills them.
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
	migrate1to2,
}

// migrate0to1: a version-0 file has no meta bucket and possibly a bans
// bucket without the expiry index. Create every bucket and rebuild the index.
func migrate0to1(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketBansV1, bucketExpiryV1, bucketHistory,
		bucketLedger, bucketPositions} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	bans, idx := tx.Bucket(bucketBansV1), tx.Bucket(bucketExpiryV1)
	return bans.ForEach(func(k, v []byte) error {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("bans[%s]: %w", k, err)
		}
		return idx.Put(expiryKey(r.Until, k), []byte{})
	})
}

// migrate1to2 moves each JSON record of the bans bucket, as a binary one,
// to the records bucket under its expiry key, indexes it by prefix, moves
// its evidence lines to the lines bucket, and drops the bans and expiry
// buckets. The history, the ledger and the tailer's positions stay as they
// are.
func migrate1to2(tx *bolt.Tx) error {
	var buckets [3]*bolt.Bucket
	for i, name := range [][]byte{bucketRecords, bucketPrefixes, bucketLines} {
		b, err := tx.CreateBucket(name)
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
		buckets[i] = b
	}
	records, prefixes, lines := buckets[0], buckets[1], buckets[2]
	err := tx.Bucket(bucketBansV1).ForEach(func(k, v []byte) error {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("bans[%s]: %w", k, err)
		}
		if !r.Prefix.IsValid() || !bytes.Equal(prefixKey(r.Prefix), k) {
			return fmt.Errorf("bans[%s]: record for prefix %s", k, r.Prefix)
		}
		if err := records.Put(expiryKey(r.Until, k), appendRecord(nil, r)); err != nil {
			return err
		}
		if err := prefixes.Put(k, untilValue(r.Until)); err != nil {
			return err
		}
		if len(r.Lines) == 0 {
			return nil
		}
		if len(r.Lines) > MaxLines { // as Put keeps them: the last ones
			r.Lines = r.Lines[len(r.Lines)-MaxLines:]
		}
		return lines.Put(k, appendLines(nil, r.Lines))
	})
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bucketBansV1, bucketExpiryV1} {
		if err := tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("delete bucket %s: %w", name, err)
		}
	}
	return nil
}

// Open opens (creating if needed, with mode 0600, and its directory
// with 0750) the block list at path and migrates it to the current schema.
// An existing file is first checked against its own meta pages (see
// checkFile): bbolt maps the file, and a page it believes is there but the
// file is too short to hold kills the process with SIGBUS.
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
	if err := checkFile(path, timeout); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			s, err = nil, corruptError(path, fmt.Sprintf("bbolt panic: %v", p))
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoSync: opts.NoSync,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, lockedError(path)
		case errors.As(err, &pe):
			return nil, fmt.Errorf("store %s: %w", path, err)
		default:
			return nil, corruptError(path, err.Error())
		}
	}
	s = &Store{db: db, path: path}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// OpenCopy opens a private copy of the block list at path, made in dir
// (os.TempDir() when empty): a consistent snapshot taken under bbolt's
// shared lock, then opened (and migrated) like any file. A dry run works
// on it, so that neither a schema migration nor the tailer's read
// positions ever reach the real file. A missing file gives an empty copy.
// Close removes the copy.
func OpenCopy(path, dir string, opts Options) (*Store, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	tmp, err := os.MkdirTemp(dir, "mxguard-copy-*")
	if err != nil {
		return nil, fmt.Errorf("store %s: copy: %w", path, err)
	}
	copyPath := filepath.Join(tmp, filepath.Base(path))
	if err := snapshot(path, copyPath, timeout); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	s, err := Open(copyPath, opts)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	s.temp = true
	return s, nil
}

// snapshot writes a consistent copy of the database at path to dst;
// nothing when there is no file at path.
func snapshot(path, dst string, timeout time.Duration) (err error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := checkFile(path, timeout); err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = corruptError(path, fmt.Sprintf("bbolt panic: %v", p))
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return lockedError(path)
		}
		return fmt.Errorf("store %s: open to copy: %w", path, err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error { return tx.CopyFile(dst, 0o600) }); err != nil {
		return fmt.Errorf("store %s: copy: %w", path, err)
	}
	return nil
}

func lockedError(path string) error {
	return fmt.Errorf("database %s is locked: is the mxguard daemon running? use the control socket (mxguard list/ban/unban)", path)
}

func corruptError(path, why string) error {
	return fmt.Errorf("store %s is truncated or corrupt: %s; move it aside or restore a backup", path, why)
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
	err := s.db.Close()
	if s.temp {
		err = errors.Join(err, os.RemoveAll(filepath.Dir(s.path)))
	}
	if err != nil {
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

// untilValue is the 8-byte big-endian Unix ns of until that starts its
// expiry key, clamped to what fits (UnixNano is undefined outside 1678-2262).
func untilValue(until time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8+len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")), untilNanos(until))
}

// untilNanos is the expiry order of both stores: Unix nanoseconds, times
// before 1970 as 0 and after 2262 (past int64) as the largest value.
func untilNanos(until time.Time) uint64 {
	switch {
	case until.Before(time.Unix(0, 0)):
		return 0
	case until.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return uint64(until.UnixNano())
}

// expiryKey is until's untilValue followed by the prefix key.
func expiryKey(until time.Time, key []byte) []byte {
	return append(untilValue(until), key...)
}

// activeFrom is the first expiry key of a ban still in force at now.
func activeFrom(now time.Time) []byte { return untilValue(now.Add(time.Nanosecond)) }

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

// storedKey returns the expiry key under which the ban for the prefix key
// is stored, or nil.
func storedKey(tx *bolt.Tx, key []byte) ([]byte, error) {
	until := tx.Bucket(bucketPrefixes).Get(key)
	if until == nil {
		return nil, nil
	}
	if len(until) != 8 {
		return nil, fmt.Errorf("prefixes[%s]: %w: %d bytes", key, errMalformed, len(until))
	}
	return append(bytes.Clone(until), key...), nil
}

// getRecord reads the ban for the prefix key without its lines, and
// returns its expiry key.
func getRecord(tx *bolt.Tx, key []byte) (Record, []byte, error) {
	ek, err := storedKey(tx, key)
	if err != nil || ek == nil {
		return Record{}, nil, err
	}
	v := tx.Bucket(bucketRecords).Get(ek)
	if v == nil {
		return Record{}, nil, fmt.Errorf("prefixes[%s]: no record under its expiry key", key)
	}
	var r Record
	if err := decodeRecord(v, &r); err != nil { // decodeRecord copies: safe after the tx
		return Record{}, nil, fmt.Errorf("records[%x]: %w", ek, err)
	}
	return r, ek, nil
}

// addLines fills r.Lines from the lines bucket.
func addLines(tx *bolt.Tx, key []byte, r *Record) error {
	v := tx.Bucket(bucketLines).Get(key)
	if v == nil {
		return nil
	}
	lines, err := decodeLines(v)
	if err != nil {
		return fmt.Errorf("lines[%s]: %w", key, err)
	}
	r.Lines = lines
	return nil
}

// ledgerLines fills r.Lines for the ledger entry of a ban being removed.
// Lines that do not decode are left out: they are only evidence, and a bad
// value must never stop an unban or the expiry of every ban.
func ledgerLines(tx *bolt.Tx, key []byte, r *Record) {
	if err := addLines(tx, key, r); err != nil {
		r.Lines = nil
	}
}

// deleteRecord removes the ban stored under the expiry key ek, its prefix
// entry and its lines.
func deleteRecord(tx *bolt.Tx, ek []byte) error {
	key := ek[8:]
	if err := tx.Bucket(bucketRecords).Delete(ek); err != nil {
		return err
	}
	if err := tx.Bucket(bucketLines).Delete(key); err != nil {
		return err
	}
	return tx.Bucket(bucketPrefixes).Delete(key)
}

// Put stores r (keyed by its prefix) with its Lines, which replace the
// stored ones, and appends to the ledger. It is a new offence - history
// counted, ledger event "ban" - unless a record for the prefix with the
// same Since and Offence already exists, in which case it is an extension
// ("extend"). Lines beyond MaxLines are dropped (the last ones are kept).
func (s *Store) Put(r Record) error { return s.PutWith(r, nil) }

// PutWith is Put that also runs also (when not nil) in the same
// transaction: the daemon saves the read position of the log line that
// caused the ban with it, so that after a crash the line is neither
// decided twice nor lost. An error from also undoes the Put.
func (s *Store) PutWith(r Record, also func(*bolt.Tx) error) error {
	if !r.Prefix.IsValid() {
		return fmt.Errorf("store %s: put: invalid prefix", s.path)
	}
	if len(r.Lines) > MaxLines {
		r.Lines = r.Lines[len(r.Lines)-MaxLines:]
	}
	err := s.update(func(tx *bolt.Tx) error {
		if err := putRecord(tx, r); err != nil || also == nil {
			return err
		}
		return also(tx)
	})
	if err != nil {
		return fmt.Errorf("store %s: put %s: %w", s.path, r.Prefix, err)
	}
	return nil
}

func putRecord(tx *bolt.Tx, r Record) error {
	key := prefixKey(r.Prefix)
	old, oldKey, err := getRecord(tx, key)
	if err != nil {
		return err
	}
	records := tx.Bucket(bucketRecords)
	if oldKey != nil {
		if err := records.Delete(oldKey); err != nil {
			return err
		}
	}
	ek := expiryKey(r.Until, key)
	if err := records.Put(ek, appendRecord(nil, r)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketPrefixes).Put(key, ek[:8]); err != nil {
		return err
	}
	lines := tx.Bucket(bucketLines)
	if len(r.Lines) > 0 {
		err = lines.Put(key, appendLines(nil, r.Lines))
	} else {
		err = lines.Delete(key)
	}
	if err != nil {
		return err
	}
	event := "extend"
	if oldKey == nil || !old.Since.Equal(r.Since) || old.Offence != r.Offence {
		event = "ban"
		if err := addOffence(tx, r.Prefix, r.Since); err != nil {
			return err
		}
	}
	return ledgerAppend(tx, event, r.Since, r)
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

// Get returns the stored record for p with its Lines (it may already be
// past its Until but not yet swept).
func (s *Store) Get(p netip.Prefix) (Record, bool, error) {
	var (
		r  Record
		ok bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		key := prefixKey(p)
		var ek []byte
		var err error
		if r, ek, err = getRecord(tx, key); err != nil || ek == nil {
			return err
		}
		ok = true
		return addLines(tx, key, &r)
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("store %s: get %s: %w", s.path, p, err)
	}
	return r, ok, nil
}

// Delete removes the ban for p and its lines (history is kept) and records
// "unban" in the ledger. It reports whether there was one.
func (s *Store) Delete(p netip.Prefix, now time.Time) (bool, error) {
	var found bool
	err := s.update(func(tx *bolt.Tx) error {
		key := prefixKey(p)
		r, ek, err := getRecord(tx, key)
		if err != nil || ek == nil {
			return err
		}
		found = true
		ledgerLines(tx, key, &r)
		if err := deleteRecord(tx, ek); err != nil {
			return err
		}
		return ledgerAppend(tx, "unban", now, r)
	})
	if err != nil {
		return false, fmt.Errorf("store %s: delete %s: %w", s.path, p, err)
	}
	return found, nil
}

// Active returns the records with Until after now, in order of Until,
// without their Lines (Get has them): this is the bulk read behind list,
// restore and every backend Sync, one sequential walk of the records.
func (s *Store) Active(now time.Time) ([]Record, error) {
	var out []Record
	from := activeFrom(now)
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		n := 0
		for k, _ := c.Seek(from); k != nil; k, _ = c.Next() {
			n++
		}
		out = make([]Record, n)
		var dec recordDecoder
		i := 0
		for k, v := c.Seek(from); k != nil && i < n; k, v = c.Next() {
			if err := dec.decode(v, &out[i]); err != nil {
				return fmt.Errorf("records[%x]: %w", k, err)
			}
			i++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: active: %w", s.path, err)
	}
	return out, nil
}

// CountActive counts bans with Until after now without decoding them.
func (s *Store) CountActive(now time.Time) (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, _ := c.Seek(activeFrom(now)); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store %s: count: %w", s.path, err)
	}
	return n, nil
}

// ActivePrefixes lists the prefixes of the bans in force at now, in order
// of Until, decoding nothing else of the records: cheap enough to run over
// 100k bans at every reload.
func (s *Store) ActivePrefixes(now time.Time) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		from, n := activeFrom(now), 0
		for k, _ := c.Seek(from); k != nil; k, _ = c.Next() {
			n++
		}
		out = make([]netip.Prefix, 0, n)
		for k, v := c.Seek(from); k != nil; k, v = c.Next() {
			in := reader{b: v}
			var p netip.Prefix
			if err := p.UnmarshalBinary(in.bytes()); in.err != nil || err != nil {
				return fmt.Errorf("records[%x]: %w: prefix", k, errMalformed)
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

// DeleteExpired removes every record with Until at or before now (with its
// lines), records "expire" in the ledger, and returns what it removed, with
// Lines, in order of Until (history is kept).
func (s *Store) DeleteExpired(now time.Time) ([]Record, error) {
	var out []Record
	bound := activeFrom(now)
	err := s.update(func(tx *bolt.Tx) error {
		out = out[:0] // the function may not run twice, but keep it idempotent anyway
		type ban struct {
			key []byte
			rec Record
		}
		var dead []ban
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.First(); k != nil && bytes.Compare(k, bound) < 0; k, v = c.Next() {
			b := ban{key: bytes.Clone(k)}
			if len(k) <= 8 {
				return fmt.Errorf("records[%x]: %w: key", k, errMalformed)
			}
			if err := decodeRecord(v, &b.rec); err != nil {
				return fmt.Errorf("records[%x]: %w", k, err)
			}
			dead = append(dead, b)
		}
		for _, b := range dead {
			ledgerLines(tx, b.key[8:], &b.rec)
			if err := deleteRecord(tx, b.key); err != nil {
				return err
			}
			if err := ledgerAppend(tx, "expire", now, b.rec); err != nil {
				return err
			}
			out = append(out, b.rec)
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
		prefixes := tx.Bucket(bucketPrefixes)
		c = tx.Bucket(bucketHistory).Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(dead) < limit); k, v = c.Next() {
			var h History
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("history[%s]: %w", k, err)
			}
			if h.LastBan.Before(before) && prefixes.Get(k) == nil {
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

// errMalformed reports a value of the bans or lines bucket that does not
// decode.
var errMalformed = errors.New("malformed value")

// appendRecord appends the binary form of r without its Lines to b:
//
//	uvarint length, prefix (netip.Prefix binary form)
//	uvarint length, detector
//	uvarint length, reason
//	varint evidence, varint offence
//	first seen, last seen, since, until: each varint Unix seconds and
//	uvarint nanoseconds
//
// JSON cost seconds to decode for 100k bans; this is read at memory speed.
func appendRecord(b []byte, r Record) []byte {
	var buf [18]byte                            // room for an IPv6 prefix
	prefix, _ := r.Prefix.AppendBinary(buf[:0]) // never fails
	b = appendBytes(b, prefix)
	b = appendString(b, r.Detector)
	b = appendString(b, r.Reason)
	b = binary.AppendVarint(b, int64(r.Evidence))
	b = binary.AppendVarint(b, int64(r.Offence))
	for _, t := range []time.Time{r.FirstSeen, r.LastSeen, r.Since, r.Until} {
		b = binary.AppendVarint(b, t.Unix())
		b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
	}
	return b
}

// appendLines appends the binary form of lines to b: uvarint count, then
// each line as uvarint length and bytes.
func appendLines(b []byte, lines []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(lines)))
	for _, l := range lines {
		b = appendString(b, l)
	}
	return b
}

func appendBytes(b, s []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeRecord decodes a value written by appendRecord into r, copying
// everything it keeps out of v.
func decodeRecord(v []byte, r *Record) error {
	var d recordDecoder
	return d.decode(v, r)
}

// recordDecoder decodes many records in a row, sharing the detector and
// reason strings that repeat among them instead of allocating each.
type recordDecoder struct {
	strings map[string]string
}

// maxInterned bounds the strings a recordDecoder shares.
const maxInterned = 4096

func (d *recordDecoder) decode(v []byte, r *Record) error {
	in := reader{b: v}
	prefix := in.bytes()
	detector := in.bytes()
	reason := in.bytes()
	evidence, offence := in.varint(), in.varint()
	var times [4]time.Time
	for i := range times {
		times[i] = in.time()
	}
	if in.err != nil {
		return in.err
	}
	if len(in.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errMalformed, len(in.b))
	}
	if err := r.Prefix.UnmarshalBinary(prefix); err != nil {
		return fmt.Errorf("%w: prefix: %w", errMalformed, err)
	}
	r.Detector, r.Reason = d.intern(detector), d.intern(reason)
	r.Evidence, r.Offence = int(evidence), int(offence)
	r.FirstSeen, r.LastSeen, r.Since, r.Until = times[0], times[1], times[2], times[3]
	return nil
}

func (d *recordDecoder) intern(b []byte) string {
	if s, ok := d.strings[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if d.strings == nil {
		d.strings = make(map[string]string)
	}
	if len(d.strings) < maxInterned {
		d.strings[s] = s
	}
	return s
}

// decodeLines decodes a value written by appendLines.
func decodeLines(v []byte) ([]string, error) {
	in := reader{b: v}
	n := in.uvarint()
	if n > MaxLines {
		return nil, fmt.Errorf("%w: %d lines", errMalformed, n)
	}
	lines := make([]string, 0, n)
	for range n {
		lines = append(lines, string(in.bytes()))
	}
	if in.err != nil {
		return nil, in.err
	}
	if len(in.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(in.b))
	}
	return lines, nil
}

// reader reads the varints and byte strings of a binary value; the first
// failure sticks in err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: truncated", errMalformed)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: truncated", errMalformed)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: truncated", errMalformed)
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// time reads Unix seconds and nanoseconds, as UTC (the zero time comes
// back as the zero time).
func (r *reader) time() time.Time {
	sec, nsec := r.varint(), r.uvarint()
	if nsec >= uint64(time.Second) {
		r.err = fmt.Errorf("%w: %d nanoseconds", errMalformed, nsec)
	}
	if r.err != nil {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// bbolt's on-disk meta page (go.etcd.io/bbolt/internal/common): a 16-byte
// page header, then magic, version, page size, flags (uint32 each), root
// bucket (root pgid, sequence), freelist pgid, pgid (the high-water mark:
// pages in use), txid, and an FNV-64a checksum of the fields before it, all
// in the machine's byte order.
const (
	boltMagic         = 0xED0CDAED
	boltVersion       = 2
	boltPageHeader    = 16
	boltMetaSize      = 64
	boltChecksumAt    = 56
	boltNoFreelist    = ^uint64(0)
	boltMinPageSize   = 1024
	boltMaxPageSize   = 1 << 24
	lockRetryInterval = 50 * time.Millisecond
)

type boltMeta struct {
	pageSize                   uint64
	root, freelist, pgid, txid uint64
}

// parseBoltMeta decodes and verifies the meta page at the start of page.
func parseBoltMeta(page []byte) (boltMeta, error) {
	if len(page) < boltPageHeader+boltMetaSize {
		return boltMeta{}, errors.New("cut short")
	}
	m := page[boltPageHeader : boltPageHeader+boltMetaSize]
	order := binary.NativeEndian
	if order.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, errors.New("not a bbolt meta page (bad magic)")
	}
	if v := order.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt file format %d, want %d", v, boltVersion)
	}
	sum := fnv.New64a()
	sum.Write(m[:boltChecksumAt])
	if order.Uint64(m[boltChecksumAt:]) != sum.Sum64() {
		return boltMeta{}, errors.New("checksum mismatch")
	}
	meta := boltMeta{
		pageSize: uint64(order.Uint32(m[8:])),
		root:     order.Uint64(m[16:]),
		freelist: order.Uint64(m[32:]),
		pgid:     order.Uint64(m[40:]),
		txid:     order.Uint64(m[48:]),
	}
	if meta.pageSize < boltMinPageSize || meta.pageSize > boltMaxPageSize || meta.pageSize&(meta.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d", meta.pageSize)
	}
	return meta, nil
}

// checkFile refuses an existing store file that bbolt would map beyond its
// end (SIGBUS) or that holds no valid meta page, mirroring how bbolt picks
// its meta page, and an empty one (bbolt would silently start an empty
// block list in it). A missing file is fine: bbolt creates it. It reads
// under a shared lock, so that a file another process holds open is
// reported as locked, not checked while it is being written.
func checkFile(path string, timeout time.Duration) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store %s: %w", path, err)
	}
	defer f.Close() // releases the lock
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	if err := lockShared(f, timeout); err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return lockedError(path)
		}
		return fmt.Errorf("store %s: lock: %w", path, err)
	}
	if fi, err = f.Stat(); err != nil { // the holder of the lock may have grown it
		return fmt.Errorf("store %s: %w", path, err)
	}
	if why := checkMeta(f, fi.Size()); why != "" {
		return corruptError(path, why)
	}
	return nil
}

// checkMeta returns what is wrong with a bbolt file of the given size, or "".
func checkMeta(f io.ReaderAt, size int64) string {
	if size == 0 {
		return "the file is empty (0 bytes)"
	}
	readPage := func(off int64) []byte {
		buf := make([]byte, boltPageHeader+boltMetaSize)
		n, _ := f.ReadAt(buf, off)
		return buf[:n]
	}
	// The page size is in the first meta page; if that one is damaged,
	// look for the second at each possible page size, as bbolt does.
	meta0, err0 := parseBoltMeta(readPage(0))
	pageSize := meta0.pageSize
	if err0 != nil {
		for ps := int64(boltMinPageSize); ps <= boltMaxPageSize && ps < size; ps *= 2 {
			if m, err := parseBoltMeta(readPage(ps)); err == nil && int64(m.pageSize) == ps {
				pageSize = m.pageSize
				break
			}
		}
	}
	if pageSize == 0 {
		return fmt.Sprintf("no valid bbolt meta page in its %d bytes (first page: %v)", size, err0)
	}
	ps := int64(pageSize)
	if size < 2*ps {
		return fmt.Sprintf("the file is %d bytes, shorter than its two %d-byte meta pages", size, ps)
	}
	meta1, err1 := parseBoltMeta(readPage(ps))
	// bbolt uses the valid meta page with the higher txid.
	var meta boltMeta
	switch {
	case err0 == nil && (err1 != nil || meta0.txid >= meta1.txid):
		meta = meta0
	case err1 == nil:
		meta = meta1
	default:
		return fmt.Sprintf("both meta pages are invalid (%v; %v)", err0, err1)
	}
	if meta.pageSize != pageSize {
		return fmt.Sprintf("the meta pages disagree on the page size (%d, %d)", pageSize, meta.pageSize)
	}
	if meta.pgid < 2 || meta.pgid > uint64(size/ps) {
		return fmt.Sprintf("the file is %d bytes, but its meta page (txid %d) says %d pages of %d bytes (%d bytes) are in use",
			size, meta.txid, meta.pgid, ps, meta.pgid*pageSize)
	}
	if meta.root < 2 || meta.root >= meta.pgid {
		return fmt.Sprintf("root page %d outside the %d pages in use", meta.root, meta.pgid)
	}
	if meta.freelist != boltNoFreelist {
		if meta.freelist < 2 || meta.freelist >= meta.pgid {
			return fmt.Sprintf("freelist page %d outside the %d pages in use", meta.freelist, meta.pgid)
		}
		// The freelist is the first page bbolt reads after the meta
		// pages; it may span overflow pages.
		hdr := readPage(int64(meta.freelist) * ps)
		if len(hdr) < boltPageHeader {
			return fmt.Sprintf("freelist page %d cut short", meta.freelist)
		}
		overflow := uint64(binary.NativeEndian.Uint32(hdr[12:]))
		if meta.freelist+overflow >= meta.pgid {
			return fmt.Sprintf("freelist pages %d-%d outside the %d pages in use", meta.freelist, meta.freelist+overflow, meta.pgid)
		}
	}
	return ""
}

// lockShared takes a shared flock on f, retrying until timeout; bbolt
// holds an exclusive one on the file while it has it open.
func lockShared(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return berrors.ErrTimeout
		}
		time.Sleep(min(lockRetryInterval, time.Until(deadline)+time.Millisecond))
	}
}
