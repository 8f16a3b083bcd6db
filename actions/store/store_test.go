package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openTest(t *testing.T, path string) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "state", "mxguard.db")
	}
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rec(p string, since time.Time, d time.Duration) Record {
	return Record{Prefix: netip.MustParsePrefix(p), Detector: "dictionary", Reason: "test",
		Evidence: 3, FirstSeen: since, LastSeen: since, Since: since, Until: since.Add(d), Offence: 1}
}

func TestStorePutGetActiveExpired(t *testing.T) {
	s := openTest(t, "")
	recs := []Record{
		rec("192.0.2.1/32", t0, time.Hour),
		rec("192.0.2.2/32", t0, 3*time.Hour),
		rec("2001:db8::/64", t0, 2*time.Hour),
	}
	for _, r := range recs {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		at          time.Time
		wantActive  []string
		wantExpired []string
	}{
		{t0, []string{"192.0.2.1/32", "2001:db8::/64", "192.0.2.2/32"}, nil},
		{t0.Add(time.Hour), []string{"2001:db8::/64", "192.0.2.2/32"}, []string{"192.0.2.1/32"}},
		{t0.Add(90 * time.Minute), []string{"2001:db8::/64", "192.0.2.2/32"}, []string{"192.0.2.1/32"}},
		{t0.Add(5 * time.Hour), nil, []string{"192.0.2.1/32", "2001:db8::/64", "192.0.2.2/32"}},
	}
	names := func(rs []Record) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Prefix.String())
		}
		return out
	}
	for _, tt := range tests {
		a, err := s.Active(tt.at)
		if err != nil {
			t.Fatal(err)
		}
		e, err := s.Expired(tt.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(names(a), ","); got != strings.Join(tt.wantActive, ",") {
			t.Errorf("Active(%v) = %s, want %v", tt.at, got, tt.wantActive)
		}
		if got := strings.Join(names(e), ","); got != strings.Join(tt.wantExpired, ",") {
			t.Errorf("Expired(%v) = %s, want %v", tt.at, got, tt.wantExpired)
		}
		n, err := s.CountActive(tt.at)
		if err != nil || n != len(tt.wantActive) {
			t.Errorf("CountActive(%v) = %d, %v; want %d", tt.at, n, err, len(tt.wantActive))
		}
	}

	// Extending moves the index entry: no stale entry left behind.
	r := recs[0]
	r.Until = t0.Add(10 * time.Hour)
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Expired(t0.Add(5 * time.Hour)); len(e) != 2 {
		t.Errorf("after extension, Expired = %v, want 2 records", names(e))
	}
	got, ok, err := s.Get(r.Prefix)
	if err != nil || !ok || !got.Until.Equal(r.Until) {
		t.Errorf("Get = %+v %v %v", got, ok, err)
	}
	h, _, _ := s.History(r.Prefix)
	if h.Offences != 1 {
		t.Errorf("extension counted as offence: history %+v", h)
	}
	led, _ := s.Ledger(r.Prefix, 0)
	if len(led) != 2 || led[0].Event != "extend" || led[1].Event != "ban" {
		t.Errorf("ledger = %+v", led)
	}

	// Delete keeps history, sweep removes only expired ones.
	if found, err := s.Delete(recs[1].Prefix, t0); err != nil || !found {
		t.Fatalf("Delete = %v %v", found, err)
	}
	if found, _ := s.Delete(recs[1].Prefix, t0); found {
		t.Error("second Delete found the record")
	}
	if h, ok, _ := s.History(recs[1].Prefix); !ok || h.Offences != 1 {
		t.Errorf("history lost on delete: %+v %v", h, ok)
	}
	dead, err := s.DeleteExpired(t0.Add(5 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Prefix != recs[2].Prefix {
		t.Errorf("DeleteExpired = %v", names(dead))
	}
	if a, _ := s.Active(t0); len(a) != 1 || a[0].Prefix != recs[0].Prefix {
		t.Errorf("after sweep Active = %v", names(a))
	}
}

func TestStoreLinesCapped(t *testing.T) {
	s := openTest(t, "")
	r := rec("192.0.2.9/32", t0, time.Hour)
	r.Lines = []string{"1", "2", "3", "4", "5", "6", "7"}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	got, _, _ := s.Get(r.Prefix)
	if strings.Join(got.Lines, "") != "34567" {
		t.Errorf("Lines = %q, want the last 5", got.Lines)
	}
}

func TestStoreReopenKeepsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mxguard.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := rec("198.51.100.4/32", t0, time.Hour)
	r.Lines = []string{"NOQUEUE: reject: RCPT from unknown[198.51.100.4]"}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}

	s = openTest(t, path)
	got, ok, err := s.Get(r.Prefix)
	if err != nil || !ok {
		t.Fatalf("Get after reopen = %v %v", ok, err)
	}
	if got.Reason != r.Reason || !got.Until.Equal(r.Until) || len(got.Lines) != 1 {
		t.Errorf("record after reopen = %+v", got)
	}
	a, _ := s.Active(t0)
	if len(a) != 1 {
		t.Errorf("Active after reopen = %d records", len(a))
	}
	if v, err := s.SchemaVersion(); err != nil || v != Schema {
		t.Errorf("SchemaVersion = %d %v", v, err)
	}
}

func TestStoreMigrateFromV0(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := rec("192.0.2.50/32", t0, time.Hour)
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("bans"))
		if err != nil {
			return err
		}
		v, _ := json.Marshal(old)
		return b.Put([]byte(old.Prefix.String()), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openTest(t, path)
	if v, err := s.SchemaVersion(); err != nil || v != 1 {
		t.Fatalf("SchemaVersion after migration = %d %v", v, err)
	}
	// The expiry index was rebuilt: the old ban is found by Active and swept.
	if a, err := s.Active(t0); err != nil || len(a) != 1 || a[0].Prefix != old.Prefix {
		t.Errorf("Active after migration = %v %v", a, err)
	}
	if dead, err := s.DeleteExpired(t0.Add(2 * time.Hour)); err != nil || len(dead) != 1 {
		t.Errorf("DeleteExpired after migration = %v %v", dead, err)
	}
}

func TestStoreRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema_version"), binary.BigEndian.AppendUint64(nil, Schema+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a newer schema: %v", err)
	}
}

func TestStoreOpenErrors(t *testing.T) {
	dir := t.TempDir()
	locked := filepath.Join(dir, "locked.db")
	holder, err := bolt.Open(locked, 0o600, nil) // another "process" holds the lock
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()

	junkBig := filepath.Join(dir, "junk-big.db")
	junk := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range junk {
		junk[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(junkBig, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	junkSmall := filepath.Join(dir, "junk-small.db")
	if err := os.WriteFile(junkSmall, []byte("this is not a bbolt file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path, want string
	}{
		{"locked", locked, "is locked: is the mxguard daemon running?"},
		{"junk 64KiB", junkBig, "corrupt"},
		{"junk small", junkSmall, "corrupt"},
		{"parent is a file", filepath.Join(notDir, "mxguard.db"), "create directory"},
		{"path is a directory", dir, "store " + dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.path, Options{Timeout: 50 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s and %q", err, tt.path, tt.want)
			}
		})
	}
}

func TestStoreLockedBySecondOpenStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mxguard.db")
	openTest(t, path)
	_, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "is locked") {
		t.Fatalf("second Open: %v", err)
	}
}

func TestStoreUnwritableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions (the parent-is-a-file case is in TestStoreOpenErrors)")
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mxguard.db")
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open in read-only dir: %v", err)
	}
}

func TestStoreCorruptPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mxguard.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		r := rec(fmt.Sprintf("10.0.%d.%d/32", i/256, i%256), t0, time.Hour)
		r.Lines = []string{strings.Repeat("x", 200)}
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// Keep the two meta pages, overwrite every other page with junk.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	r := rand.New(rand.NewPCG(3, 4))
	for i := 2 * page; i < len(data); i++ {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{Timeout: 50 * time.Millisecond})
	if err == nil {
		defer s.Close()
		_, err = s.Active(t0)
	}
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt pages: err = %v, want an error naming %s", err, path)
	}
}

func TestStorePrune(t *testing.T) {
	s := openTest(t, "")
	old := rec("192.0.2.1/32", t0, time.Hour)
	gone := rec("192.0.2.2/32", t0, time.Hour)
	recent := rec("192.0.2.3/32", t0.Add(100*24*time.Hour), time.Hour)
	for _, r := range []Record{old, gone, recent} {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DeleteExpired(t0.Add(2 * time.Hour)); err != nil { // gone is swept, old too
		t.Fatal(err)
	}
	if err := s.Put(old); err != nil { // old is banned again (a new offence, since t0)
		t.Fatal(err)
	}
	l, h, err := s.Prune(t0.Add(50*24*time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Ledger: ban old, ban gone, ban recent, expire old, expire gone, ban old.
	// Entries dated before the cut-off up to the first newer one: 2 bans.
	if l != 2 || h != 1 {
		t.Errorf("Prune = %d ledger, %d history; want 2 and 1", l, h)
	}
	if _, ok, _ := s.History(gone.Prefix); ok {
		t.Error("history of a long-gone prefix kept")
	}
	if _, ok, _ := s.History(old.Prefix); !ok {
		t.Error("history of a stored ban pruned")
	}
	if e, _ := s.Ledger(recent.Prefix, 0); len(e) != 1 {
		t.Errorf("recent ledger = %+v", e)
	}
}

// ActivePrefixes reads the index only and agrees with Active.
func TestStoreActivePrefixes(t *testing.T) {
	s := openTest(t, "")
	for _, r := range []Record{
		rec("192.0.2.1/32", t0, time.Hour),
		rec("2001:db8::/64", t0, 3*time.Hour),
		rec("198.51.100.0/24", t0.Add(-2*time.Hour), time.Hour), // expired
	} {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := s.ActivePrefixes(t0)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := s.Active(t0)
	if len(ps) != 2 || len(recs) != 2 {
		t.Fatalf("prefixes %v, active %d", ps, len(recs))
	}
	for i, r := range recs {
		if ps[i] != r.Prefix {
			t.Errorf("prefix %d: %v, record %v", i, ps[i], r.Prefix)
		}
	}
}
