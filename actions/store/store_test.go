package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/internal/tailer"
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

func names(rs []Record) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Prefix.String())
	}
	return strings.Join(out, ",")
}

// threeBans are banned at t0 for 1h, 3h and 2h, with lines.
func threeBans() []Record {
	recs := []Record{
		rec("192.0.2.1/32", t0, time.Hour),
		rec("192.0.2.2/32", t0, 3*time.Hour),
		rec("2001:db8::/64", t0, 2*time.Hour),
	}
	for i := range recs {
		recs[i].Lines = []string{"line 1 of " + recs[i].Prefix.String(), "line 2"}
	}
	return recs
}

func TestStorePutGetActive(t *testing.T) {
	s := openTest(t, "")
	recs := threeBans()
	for _, r := range recs {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		at         time.Time
		wantActive string
	}{
		{t0, "192.0.2.1/32,2001:db8::/64,192.0.2.2/32"},
		{t0.Add(time.Hour), "2001:db8::/64,192.0.2.2/32"},
		{t0.Add(90 * time.Minute), "2001:db8::/64,192.0.2.2/32"},
		{t0.Add(5 * time.Hour), ""},
	}
	for _, tt := range tests {
		a, err := s.Active(tt.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(a); got != tt.wantActive {
			t.Errorf("Active(%v) = %s, want %s", tt.at, got, tt.wantActive)
		}
		for _, r := range a {
			if r.Lines != nil {
				t.Errorf("Active returned lines for %s: %q", r.Prefix, r.Lines)
			}
		}
		n, err := s.CountActive(tt.at)
		if want := len(a); err != nil || n != want {
			t.Errorf("CountActive(%v) = %d, %v; want %d", tt.at, n, err, want)
		}
	}

	// Active has every field but the lines; Get has the lines too.
	a, _ := s.Active(t0)
	want := recs[0]
	want.Lines = nil
	if a[0].Prefix != want.Prefix || fmt.Sprintf("%+v", a[0]) != fmt.Sprintf("%+v", want) {
		t.Errorf("Active record\n got %+v\nwant %+v", a[0], want)
	}
	got, ok, err := s.Get(recs[0].Prefix)
	if err != nil || !ok || fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", recs[0]) {
		t.Errorf("Get = %v %v\n got %+v\nwant %+v", ok, err, got, recs[0])
	}

	// Extending moves the index entry: no stale entry left behind.
	r := recs[0]
	r.Until = t0.Add(10 * time.Hour)
	r.Lines = append(r.Lines, "line 3")
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Active(t0.Add(5 * time.Hour)); names(a) != "192.0.2.1/32" {
		t.Errorf("after extension, Active(t0+5h) = %s", names(a))
	}
	got, ok, err = s.Get(r.Prefix)
	if err != nil || !ok || !got.Until.Equal(r.Until) || len(got.Lines) != 3 {
		t.Errorf("Get = %+v %v %v", got, ok, err)
	}
	h, _, _ := s.History(r.Prefix)
	if h.Offences != 1 {
		t.Errorf("extension counted as offence: history %+v", h)
	}
	led, _ := s.Ledger(r.Prefix, 0)
	if len(led) != 2 || led[0].Event != "extend" || led[1].Event != "ban" || len(led[0].Record.Lines) != 3 {
		t.Errorf("ledger = %+v", led)
	}
	// Put without lines drops the stored ones.
	r.Lines = nil
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Get(r.Prefix); got.Lines != nil {
		t.Errorf("lines after a Put without lines: %q", got.Lines)
	}

	// Delete keeps history, removes the lines and records them in the ledger.
	if found, err := s.Delete(recs[1].Prefix, t0); err != nil || !found {
		t.Fatalf("Delete = %v %v", found, err)
	}
	if found, _ := s.Delete(recs[1].Prefix, t0); found {
		t.Error("second Delete found the record")
	}
	if h, ok, _ := s.History(recs[1].Prefix); !ok || h.Offences != 1 {
		t.Errorf("history lost on delete: %+v %v", h, ok)
	}
	if led, _ := s.Ledger(recs[1].Prefix, 1); len(led) != 1 || led[0].Event != "unban" || len(led[0].Record.Lines) != 2 {
		t.Errorf("ledger after delete = %+v", led)
	}
	assertNoLines(t, s, recs[1].Prefix)
}

// assertNoLines checks that no evidence lines are left for p.
func assertNoLines(t *testing.T, s *Store, p netip.Prefix) {
	t.Helper()
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketLines).Get(prefixKey(p)); v != nil {
			t.Errorf("lines of %s left behind: %q", p, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// DeleteExpired removes exactly the records with Until at or before now,
// with their lines, returns them in order of Until, and ledgers each.
func TestStoreDeleteExpired(t *testing.T) {
	tests := []struct {
		at                      time.Time
		wantExpired, wantActive string
	}{
		{t0, "", "192.0.2.1/32,2001:db8::/64,192.0.2.2/32"},
		{t0.Add(time.Hour), "192.0.2.1/32", "2001:db8::/64,192.0.2.2/32"},
		{t0.Add(90 * time.Minute), "192.0.2.1/32", "2001:db8::/64,192.0.2.2/32"},
		{t0.Add(5 * time.Hour), "192.0.2.1/32,2001:db8::/64,192.0.2.2/32", ""},
	}
	for _, tt := range tests {
		t.Run(tt.at.Sub(t0).String(), func(t *testing.T) {
			s := openTest(t, "")
			for _, r := range threeBans() {
				if err := s.Put(r); err != nil {
					t.Fatal(err)
				}
			}
			dead, err := s.DeleteExpired(tt.at)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(dead); got != tt.wantExpired {
				t.Errorf("DeleteExpired(%v) = %s, want %s", tt.at, got, tt.wantExpired)
			}
			for _, r := range dead {
				if len(r.Lines) != 2 {
					t.Errorf("expired %s returned with lines %q", r.Prefix, r.Lines)
				}
				if _, ok, _ := s.Get(r.Prefix); ok {
					t.Errorf("%s still stored", r.Prefix)
				}
				assertNoLines(t, s, r.Prefix)
				if h, ok, _ := s.History(r.Prefix); !ok || h.Offences != 1 {
					t.Errorf("history of %s = %+v %v", r.Prefix, h, ok)
				}
				led, _ := s.Ledger(r.Prefix, 0)
				if len(led) != 2 || led[0].Event != "expire" || !led[0].At.Equal(tt.at) || len(led[0].Record.Lines) != 2 {
					t.Errorf("ledger of %s = %+v", r.Prefix, led)
				}
			}
			if a, _ := s.Active(tt.at); names(a) != tt.wantActive {
				t.Errorf("Active after sweep = %s, want %s", names(a), tt.wantActive)
			}
			if again, err := s.DeleteExpired(tt.at); err != nil || len(again) != 0 {
				t.Errorf("second DeleteExpired = %s %v", names(again), err)
			}
		})
	}

	// An extended ban is not swept at its old Until.
	s := openTest(t, "")
	recs := threeBans()
	recs[0].Until = t0.Add(10 * time.Hour)
	for _, r := range append(threeBans(), recs[0]) {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if dead, _ := s.DeleteExpired(t0.Add(5 * time.Hour)); names(dead) != "2001:db8::/64,192.0.2.2/32" {
		t.Errorf("after extension, DeleteExpired = %s", names(dead))
	}
	if a, _ := s.Active(t0); names(a) != "192.0.2.1/32" {
		t.Errorf("after extension and sweep, Active = %s", names(a))
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
	// more evidence lines than a record keeps: older code or a hand edit
	old.Lines = []string{"l1", "l2", "l3", "l4", "l5", "l6", "l7"}
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
	if v, err := s.SchemaVersion(); err != nil || v != Schema {
		t.Fatalf("SchemaVersion after migration = %d %v", v, err)
	}
	if r, ok, err := s.Get(old.Prefix); err != nil || !ok || strings.Join(r.Lines, ",") != "l3,l4,l5,l6,l7" {
		t.Errorf("lines after migration = %q %v %v, want the last five", r.Lines, ok, err)
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

// openInChildEnv names the file TestStoreOpenInChild opens; only the child
// processes started by TestStoreOpenTruncated set it.
const openInChildEnv = "MXGUARD_STORE_OPEN_IN_CHILD"

// TestStoreOpenInChild is the child half of TestStoreOpenTruncated: it opens
// the file and prints the outcome, so that a SIGBUS from a mapped page
// beyond the end of the file kills the child, not the test binary.
func TestStoreOpenInChild(t *testing.T) {
	path := os.Getenv(openInChildEnv)
	if path == "" {
		t.Skip("run by TestStoreOpenTruncated in a child process")
	}
	s, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if err != nil {
		fmt.Printf("open error: %v\n", err)
		return
	}
	defer s.Close()
	_, err = s.Active(t0)
	fmt.Printf("opened; Active error: %v\n", err)
}

// A store file cut short (or with both meta pages overwritten) is refused
// with an error naming it, before bbolt maps it, and is left as it was.
func TestStoreOpenTruncated(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	s, err := Open(orig, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		r := rec(fmt.Sprintf("10.1.%d.%d/32", i/256, i%256), t0, time.Hour)
		r.Lines = []string{strings.Repeat("x", 200), strings.Repeat("y", 200)}
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	var used int64 // pages in use (the meta page's high-water mark) in bytes
	if err := s.DB().View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	page := int64(s.DB().Info().PageSize)
	s.Close()
	data, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	if used < 16*page || int64(len(data)) < used {
		t.Fatalf("fixture: %d bytes used of %d, page %d", used, len(data), page)
	}
	garbage := func(b []byte) []byte {
		r := rand.New(rand.NewPCG(5, 6))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}

	tests := []struct {
		name string
		data []byte
	}{
		{"half the used pages", data[:used/2]},
		{"one page short", data[:used-page]},
		{"one byte short", data[:used-1]},
		{"first page only", data[:page]},
		{"cut inside the second meta page", data[:page+100]},
		{"0 bytes", nil},
		{"garbage header", append(garbage(make([]byte, 2*page)), data[2*page:]...)},
		{"garbage, one page", garbage(make([]byte, page))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mxguard.db")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestStoreOpenInChild$", "-test.v")
			cmd.Env = append(os.Environ(), openInChildEnv+"="+path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			for l := range strings.Lines(string(out)) {
				if strings.HasPrefix(l, "open error: ") {
					t.Log(strings.TrimSpace(l))
				}
			}
			want := "open error: store " + path + " is truncated or corrupt: "
			if !strings.Contains(string(out), want) || !strings.Contains(string(out), "move it aside or restore a backup") {
				t.Errorf("child output does not contain %q:\n%s", want, out)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, tt.data) {
				t.Errorf("file changed: %d bytes before, %d after", len(tt.data), len(after))
			}
		})
	}
}

// fixtureLine is evidence line i of ip in testdata/schema1.db.
func fixtureLine(ip string, i int) string {
	return fmt.Sprintf("Mar  1 11:59:%02d mx postfix/smtpd[4242]: NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <user%d@example.org>: Recipient address rejected: User unknown in local recipient table", i, ip, i)
}

// Opening testdata/schema1.db (written by the schema-1 code) migrates it:
// the records lose their lines to the lines bucket, and everything else -
// history, ledger, the tailer's positions - is kept.
func TestStoreMigrateFromV1File(t *testing.T) {
	orig, err := os.ReadFile("testdata/schema1.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mxguard.db")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, path)
	if v, err := s.SchemaVersion(); err != nil || v != Schema {
		t.Fatalf("SchemaVersion after migration = %d %v", v, err)
	}

	a, err := s.Active(t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(a); got != "192.0.2.1/32,2001:db8:1::/64" {
		t.Errorf("Active = %s", got)
	}
	lines := func(ip string, is ...int) []string {
		var out []string
		for _, i := range is {
			out = append(out, fixtureLine(ip, i))
		}
		return out
	}
	tests := []struct {
		prefix    string
		ok        bool
		until     time.Time
		offence   int
		evidence  int
		lines     []string
		offences  int
		ledger    string // events, newest first
		ledgerSeq []uint64
	}{
		{"192.0.2.1/32", true, t0.Add(48 * time.Hour), 1, 5, lines("192.0.2.1", 0, 1, 2, 7, 8), 1, "extend,ban", []uint64{2, 1}},
		{"2001:db8:1::/64", true, t0.Add(7*24*time.Hour - time.Hour), 2, 5, lines("2001:db8:1::", 0, 1, 2, 3, 4), 2, "ban,expire,ban", []uint64{5, 4, 3}},
		{"198.51.100.7/32", true, t0.Add(-2 * time.Hour), 1, 0, nil, 1, "ban", []uint64{6}},
		{"203.0.113.0/24", false, time.Time{}, 0, 0, nil, 1, "unban,ban", []uint64{8, 7}},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		r, ok, err := s.Get(p)
		if err != nil || ok != tt.ok {
			t.Errorf("Get(%s) = %v %v, want %v", p, ok, err, tt.ok)
			continue
		}
		if ok && (r.Prefix != p || !r.Until.Equal(tt.until) || r.Offence != tt.offence || r.Evidence != tt.evidence ||
			r.Detector != "dictionary" || r.Reason != "unknown recipients" || !r.LastSeen.Equal(r.Since) ||
			!r.FirstSeen.Equal(r.Since.Add(-time.Minute)) || !slices.Equal(r.Lines, tt.lines)) {
			t.Errorf("Get(%s) = %+v", p, r)
		}
		h, ok, err := s.History(p)
		if err != nil || !ok || h.Offences != tt.offences || len(h.Times) != tt.offences {
			t.Errorf("History(%s) = %+v %v %v", p, h, ok, err)
		}
		led, err := s.Ledger(p, 0)
		var events []string
		var seqs []uint64
		for _, e := range led {
			events = append(events, e.Event)
			seqs = append(seqs, e.Seq)
		}
		if err != nil || strings.Join(events, ",") != tt.ledger || !slices.Equal(seqs, tt.ledgerSeq) {
			t.Errorf("Ledger(%s) = %v %v %v", p, events, seqs, err)
		}
		if ok && len(led) > 0 && tt.lines != nil && !slices.Equal(led[0].Record.Lines, tt.lines) {
			t.Errorf("Ledger(%s) newest record lines = %q", p, led[0].Record.Lines)
		}
	}
	// The ledger's sequence continues after the migrated entries.
	if err := s.Put(rec("192.0.2.99/32", t0, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if led, _ := s.Ledger(netip.MustParsePrefix("192.0.2.99/32"), 0); len(led) != 1 || led[0].Seq != 9 {
		t.Errorf("ledger after migration = %+v", led)
	}
	// The expired ban is still swept.
	if dead, err := s.DeleteExpired(t0); err != nil || names(dead) != "198.51.100.7/32" {
		t.Errorf("DeleteExpired = %s %v", names(dead), err)
	}

	var buckets []string
	err = s.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			buckets = append(buckets, string(name))
			return nil
		})
	})
	if got := strings.Join(buckets, ","); err != nil || got != "history,ledger,lines,meta,positions,prefixes,records" {
		t.Errorf("buckets after migration: %s %v", got, err)
	}

	// The tailer's positions bucket is left as it was.
	cp, err := tailer.NewBoltCheckpoints(s.DB())
	if err != nil {
		t.Fatal(err)
	}
	pos, ok, err := cp.LoadPosition("/var/log/mail.log")
	want := tailer.Position{Dev: 2049, Inode: 131075, Offset: 987654, Size: 1000000, Head: []byte("Mar  1 00:00:01 mx postfix")}
	if err != nil || !ok || fmt.Sprint(pos) != fmt.Sprint(want) {
		t.Errorf("position after migration = %+v %v %v", pos, ok, err)
	}
}

// writeV1File writes n bans in the schema-1 layout (JSON records with their
// lines in bans, the expiry index) straight with bbolt, as the schema-1
// code would have, and returns them. Ban i is until t0+(i+1)m, with
// nLines lines.
func writeV1File(tb testing.TB, path string, n, nLines int) []Record {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var recs []Record
	for start := 0; start < n; start += 10000 {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, name := range []string{"meta", "bans", "expiry", "history", "ledger", "positions"} {
				if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
					return err
				}
			}
			if err := tx.Bucket([]byte("meta")).Put([]byte("schema_version"), binary.BigEndian.AppendUint64(nil, 1)); err != nil {
				return err
			}
			for i := start; i < min(start+10000, n); i++ {
				r := rec(fmt.Sprintf("10.%d.%d.%d/32", i>>16, byte(i>>8), byte(i)), t0, time.Duration(i+1)*time.Minute)
				for j := range nLines {
					r.Lines = append(r.Lines, fmt.Sprintf("line %d of ban %d %s", j, i, strings.Repeat("x", 180)))
				}
				recs = append(recs, r)
				v, err := json.Marshal(r)
				if err != nil {
					return err
				}
				key := prefixKey(r.Prefix)
				if err := tx.Bucket([]byte("bans")).Put(key, v); err != nil {
					return err
				}
				if err := tx.Bucket([]byte("expiry")).Put(expiryKey(r.Until, key), nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	return recs
}

// The schema 1 to 2 migration converts every record of a larger file.
func TestStoreMigrateFromV1ManyRecords(t *testing.T) {
	const n = 2500
	path := filepath.Join(t.TempDir(), "v1.db")
	want := writeV1File(t, path, n, 2)
	s := openTest(t, path)
	a, err := s.Active(t0)
	if err != nil || len(a) != n {
		t.Fatalf("Active = %d records, %v", len(a), err)
	}
	for i, r := range a { // in order of Until, as written
		got, ok, err := s.Get(r.Prefix)
		if err != nil || !ok || r.Prefix != want[i].Prefix || !r.Until.Equal(want[i].Until) ||
			!slices.Equal(got.Lines, want[i].Lines) {
			t.Fatalf("record %d: Active %+v, Get %+v %v %v; want %+v", i, r, got, ok, err, want[i])
		}
	}
}

// BenchmarkMigrate100k is the one-off cost, at the first start of schema 2,
// of converting a schema-1 file of 100k bans with five lines each.
func BenchmarkMigrate100k(b *testing.B) {
	dir := b.TempDir()
	v1 := filepath.Join(dir, "v1.db")
	writeV1File(b, v1, 100000, MaxLines)
	data, err := os.ReadFile(v1)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(data))/(1<<20), "MiB-v1")
	path := filepath.Join(dir, "mxguard.db")
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		s, err := Open(path, Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStore opens a store holding n bans active at t0, each with
// MaxLines evidence lines of about 200 bytes, written in a few large
// transactions (one Put each would take minutes at 100k).
func benchStore(b *testing.B, n int) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "mxguard.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for start := 0; start < n; start += 10000 {
		err := s.update(func(tx *bolt.Tx) error {
			for i := start; i < min(start+10000, n); i++ {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
				r := Record{Prefix: p, Detector: "dictionary", Reason: "5 unknown recipients", Evidence: 5,
					FirstSeen: t0, LastSeen: t0, Since: t0, Until: t0.Add(24*time.Hour + time.Duration(i)*time.Second), Offence: 1}
				for j := range MaxLines {
					r.Lines = append(r.Lines, (fixtureLine(p.Addr().String(), j) + strings.Repeat(" ", 200))[:200])
				}
				if err := putRecord(tx, r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkActive100k is the bulk read behind list, restore and Sync.
func BenchmarkActive100k(b *testing.B) {
	const n = 100000
	s := benchStore(b, n)
	b.ReportAllocs()
	for b.Loop() {
		a, err := s.Active(t0)
		if err != nil || len(a) != n {
			b.Fatalf("Active = %d records, %v", len(a), err)
		}
	}
}

// BenchmarkActivePrefixes100k is the read behind every reload.
func BenchmarkActivePrefixes100k(b *testing.B) {
	const n = 100000
	s := benchStore(b, n)
	b.ReportAllocs()
	for b.Loop() {
		ps, err := s.ActivePrefixes(t0)
		if err != nil || len(ps) != n {
			b.Fatalf("ActivePrefixes = %d prefixes, %v", len(ps), err)
		}
	}
}

// BenchmarkGet reads one ban with its lines out of 100k.
func BenchmarkGet(b *testing.B) {
	const n = 100000
	s := benchStore(b, n)
	p := netip.MustParsePrefix("10.0.200.1/32")
	b.ReportAllocs()
	for b.Loop() {
		if r, ok, err := s.Get(p); err != nil || !ok || len(r.Lines) != MaxLines {
			b.Fatalf("Get = %+v %v %v", r, ok, err)
		}
	}
}

// BenchmarkOpen100k opens (checks, maps, migrates nothing) a file of 100k
// bans.
func BenchmarkOpen100k(b *testing.B) {
	s := benchStore(b, 100000)
	path := s.Path()
	s.Close()
	b.ReportAllocs()
	for b.Loop() {
		s, err := Open(path, Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// One damaged meta page is what bbolt's two alternating meta pages are
// for (a torn write): it opens at the other one's transaction, and Open
// must not refuse that.
func TestStoreOpenOneMetaPageDamaged(t *testing.T) {
	for _, damaged := range []int{0, 1} {
		t.Run(fmt.Sprint("page ", damaged), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mxguard.db")
			s, err := Open(path, Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if err := s.Put(rec(fmt.Sprintf("192.0.2.%d/32", i), t0, time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			page := s.DB().Info().PageSize
			s.Close()
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, page), int64(damaged*page)); err != nil {
				t.Fatal(err)
			}
			f.Close()

			s = openTest(t, path)
			a, err := s.Active(t0)
			if err != nil || len(a) < 9 { // the older meta page may be one Put behind
				t.Errorf("Active = %d records, %v", len(a), err)
			}
		})
	}
}

// A lines value that does not decode is only lost evidence: it never stops
// an unban or the expiry of every ban.
func TestStoreBadLinesDoNotBlockRemoval(t *testing.T) {
	s := openTest(t, "")
	a, b := rec("192.0.2.1/32", t0, time.Hour), rec("192.0.2.2/32", t0, 2*time.Hour)
	a.Lines, b.Lines = []string{"line a"}, []string{"line b"}
	for _, r := range []Record{a, b} {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	err := s.DB().Update(func(tx *bolt.Tx) error {
		for _, r := range []Record{a, b} {
			if err := tx.Bucket(bucketLines).Put(prefixKey(r.Prefix), []byte{0x7f, 0xff}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if dead, err := s.DeleteExpired(t0.Add(90 * time.Minute)); err != nil || len(dead) != 1 || dead[0].Prefix != a.Prefix {
		t.Errorf("DeleteExpired with bad lines = %v, %v", dead, err)
	}
	if found, err := s.Delete(b.Prefix, t0); err != nil || !found {
		t.Errorf("Delete with bad lines = %v, %v", found, err)
	}
	if left, err := s.Active(t0); err != nil || len(left) != 0 {
		t.Errorf("left after removal: %v, %v", left, err)
	}
}
