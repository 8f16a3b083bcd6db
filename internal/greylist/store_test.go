package greylist

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/internal/testclock"
)

func greyTestConfig(path string) Config {
	c := DefaultConfig()
	c.Enabled, c.DB = true, path
	return c
}

func TestGreylistPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	clk := testclock.New()
	ip := netip.MustParseAddr("2001:db8:1:2:3::4")
	gl, err := Open(greyTestConfig(path), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := gl.checkCommit(ip, "a@b.example", "c@d.example"); err != nil || v.Pass || v.Reason != "new" {
		t.Fatalf("first: %+v %v", v, err)
	}
	// the file is locked while open
	cfg := greyTestConfig(path)
	if gl2, err := Open(cfg, nil, nil); err == nil { // waits the 2s lock timeout
		gl2.Close()
		t.Fatal("second open of a locked file succeeded")
	}
	if err := gl.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Add(10 * time.Minute)
	gl, err = Open(cfg, nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	// another address of the same /64
	if v, err := gl.checkCommit(netip.MustParseAddr("2001:db8:1:2:ffff::1"), "A@B.example", "c@d.example"); err != nil || !v.Pass || v.Reason != "retry" {
		t.Fatalf("after reopen: %+v %v", v, err)
	}
	if v, _ := gl.checkCommit(netip.MustParseAddr("2001:db8:1:3::1"), "a@b.example", "c@d.example"); v.Pass {
		t.Fatal("other /64 passed")
	}
}

func (gl *Store) count(bucket []byte) int {
	n := 0
	gl.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	})
	return n
}

func TestGreylistSweep(t *testing.T) {
	clk := testclock.New()
	cfg := greyTestConfig(filepath.Join(t.TempDir(), "g.db"))
	cfg.AutoAllowlist = 1
	gl, err := Open(cfg, nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	gl.every = 1 << 62 // sweeps by hand only
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("198.51.100.1")
	gl.checkCommit(a, "old@x.example", "r@y.example") // passes at +6m, then unused
	clk.Add(6 * time.Minute)
	if v, _ := gl.checkCommit(a, "old@x.example", "r@y.example"); !v.Pass {
		t.Fatal("retry did not pass")
	}
	gl.checkCommit(b, "never@x.example", "r@y.example") // never retried
	clk.Add(49 * time.Hour)
	gl.checkCommit(b, "fresh@x.example", "r@y.example") // new, within its window
	if n, err := gl.sweep(clk.Now()); err != nil || n != 1 {
		t.Fatalf("sweep after 49h: %d %v (want the unretried one only)", n, err)
	}
	clk.Add(34 * 24 * time.Hour) // old: 35d+ since last seen; client a too
	if n, err := gl.sweep(clk.Now()); err != nil || n != 3 {
		t.Fatalf("sweep after max_age: %d %v (want old triplet, fresh (window), client a)", n, err)
	}
	if gl.count(bucketTriplets) != 0 || gl.count(bucketClients) != 0 {
		t.Fatalf("left: %d triplets, %d clients", gl.count(bucketTriplets), gl.count(bucketClients))
	}
}

func TestGreylistCap(t *testing.T) {
	clk := testclock.New()
	cfg := greyTestConfig(filepath.Join(t.TempDir(), "g.db"))
	gl, err := Open(cfg, nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	gl.maxCount, gl.every = 20, 1<<62
	ip := netip.MustParseAddr("192.0.2.1")
	for i := range 30 {
		gl.checkCommit(ip, fmt.Sprintf("s%d@x.example", i), "r@y.example")
	}
	n, err := gl.sweep(clk.Now())
	if err != nil || n != 12 { // down to 90% of 20
		t.Fatalf("evicted %d %v, want 12", n, err)
	}
	if got := gl.count(bucketTriplets); got != 18 {
		t.Fatalf("%d left, want 18", got)
	}
}

// A flood of new triplets evicts pending triplets of the flooding
// networks, not a legitimate pending triplet of another network nor a
// passed one, even when those are older.
func TestGreylistFloodEvictsFloodFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		nets     int // flooding /24s
		perNet   int
		batch    int // entries per sweep transaction
		wantLeft int
	}{
		{"one /24", 1, 200, greylistDelBatch, 90},
		{"50 /24s", 50, 4, greylistDelBatch, 52}, // trimmed to 1 each (level 1), plus the two legitimate
		{"50 /24s, chunks of 7", 50, 4, 7, 52},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testclock.New()
			gl, err := Open(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			defer gl.Close()
			gl.maxCount, gl.every, gl.batch = 100, 1<<62, tc.batch
			passedIP, pendingIP := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")
			gl.checkCommit(passedIP, "friend@x.example", "r@y.example")
			clk.Add(6 * time.Minute)
			if v, _ := gl.checkCommit(passedIP, "friend@x.example", "r@y.example"); v.Reason != "retry" {
				t.Fatalf("friend: %+v", v)
			}
			if v, _ := gl.checkCommit(pendingIP, "Legit@x.example", "r@y.example"); v.Reason != "new" {
				t.Fatalf("legit: %+v", v)
			}
			clk.Add(time.Minute)
			for n := range tc.nets {
				for i := range tc.perNet {
					ip := netip.AddrFrom4([4]byte{203, 0, byte(n), byte(i)})
					if v, _ := gl.checkCommit(ip, fmt.Sprintf("bot%d@spam.example", i), "r@y.example"); v.Reason != "new" {
						t.Fatalf("bot %v %d: %+v", ip, i, v)
					}
				}
			}
			if _, err := gl.sweep(clk.Now()); err != nil {
				t.Fatal(err)
			}
			if got := gl.count(bucketTriplets); got != tc.wantLeft {
				t.Errorf("%d triplets left, want %d", got, tc.wantLeft)
			}
			clk.Add(5 * time.Minute)
			if v, _ := gl.checkCommit(pendingIP, "legit@x.example", "R@y.example"); v.Reason != "retry" {
				t.Errorf("legitimate pending triplet evicted: %+v", v)
			}
			if v, _ := gl.checkCommit(passedIP, "friend@x.example", "r@y.example"); v.Reason != "passed" {
				t.Errorf("passed triplet evicted: %+v", v)
			}
		})
	}
}

// Beyond maxPending pending triplets, a network's oldest pending ones
// make room; other networks are not touched.
func TestGreylistMaxPendingPerNetwork(t *testing.T) {
	clk := testclock.New()
	gl, err := Open(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	gl.maxPending, gl.every = 5, 1<<62
	other := netip.MustParseAddr("198.51.100.1")
	gl.checkCommit(other, "ok@x.example", "r@y.example")
	for i := range 8 {
		clk.Add(time.Second)
		gl.checkCommit(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), fmt.Sprintf("s%d@x.example", i), "r@y.example")
	}
	if got := gl.count(bucketTriplets); got != 6 {
		t.Fatalf("%d triplets, want 5 of the flooding /24 and 1 other", got)
	}
	for i := 3; i < 8; i++ { // the newest stay (early: read only)
		if v, _ := gl.Check(netip.MustParseAddr("192.0.2.200"), fmt.Sprintf("s%d@x.example", i), "r@y.example"); v.Reason != "early" {
			t.Fatalf("s%d: %+v", i, v)
		}
	}
	clk.Add(5 * time.Minute)
	if v, _ := gl.checkCommit(other, "ok@x.example", "r@y.example"); v.Reason != "retry" {
		t.Fatalf("other network: %+v", v)
	}
	if v, _ := gl.checkCommit(netip.MustParseAddr("192.0.2.9"), "s0@x.example", "r@y.example"); v.Reason != "new" {
		t.Fatalf("oldest not evicted: %+v", v)
	}
}

func TestGreylistKeys(t *testing.T) {
	long := strings.Repeat("x", 600) + "@example.com"
	v4, v6 := netKey(greyPrefix(netip.MustParseAddr("192.0.2.77"))), netKey(greyPrefix(netip.MustParseAddr("2001:db8:1:2::5")))
	for _, tc := range []struct {
		name string
		k    []byte
	}{
		{"v4 short", tripletKey(v4, "a@b", "c@d")},
		{"v4 long", tripletKey(v4, long, long)},
		{"v6 long", tripletKey(v6, long, "")},
	} {
		if len(tc.k) != tripletKeyLen || tripletKeyLen != 32 {
			t.Errorf("%s: %d bytes", tc.name, len(tc.k))
		}
	}
	if !bytes.Equal(tripletKey(v4, "A@B", "C@D"), tripletKey(v4, "a@b", "c@d")) {
		t.Error("case matters")
	}
	if bytes.Equal(tripletKey(v4, "a@b", "c@d"), tripletKey(v4, "a@b\x00c", "d")) {
		t.Error("NUL split collides")
	}
	if !bytes.Equal(v4, netKey(greyPrefix(netip.MustParseAddr("::ffff:192.0.2.1")))) || bytes.Equal(v4[:netKeyLen], v6) ||
		!bytes.Equal(v6, netKey(greyPrefix(netip.MustParseAddr("2001:db8:1:2:ffff::1")))) {
		t.Errorf("network keys: %x %x", v4, v6)
	}
	// every stored key, whatever the addresses
	clk := testclock.New()
	gl, err := Open(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	gl.checkCommit(netip.MustParseAddr("192.0.2.1"), long, long)
	gl.checkCommit(netip.MustParseAddr("2001:db8::1"), "", long)
	gl.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTriplets).ForEach(func(k, _ []byte) error {
			if len(k) != 32 {
				t.Errorf("key of %d bytes", len(k))
			}
			return nil
		})
	})
}

// An early retry writes nothing.
func TestGreylistEarlyRetryNoWrite(t *testing.T) {
	clk := testclock.New()
	gl, err := Open(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	ip := netip.MustParseAddr("192.0.2.1")
	gl.checkCommit(ip, "a@x.example", "r@y.example")
	st := gl.db.Stats()
	before := st.TxStats.GetWrite()
	clk.Add(time.Minute)
	if v, _ := gl.checkCommit(ip, "a@x.example", "r@y.example"); v.Reason != "early" || v.Wait != 4*time.Minute {
		t.Fatalf("%+v", v)
	}
	st = gl.db.Stats()
	if w := st.TxStats.GetWrite(); w != before {
		t.Fatalf("early retry wrote %d pages", w-before)
	}
}

// Triplets of an older file (raw addresses as keys) are converted at open.
func TestGreylistConvertsV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	clk := testclock.New()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	first := clk.Now().Unix()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketTripletsV1)
		if err != nil {
			return err
		}
		if err := b.Put([]byte("192.0.2.0/24\x00a@x.example\x00r@y.example"), tripletVal{first: first, last: first}.bytes()); err != nil {
			return err
		}
		return b.Put([]byte("garbage"), []byte("x"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	gl, err := Open(greyTestConfig(path), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	clk.Add(6 * time.Minute)
	if v, _ := gl.checkCommit(netip.MustParseAddr("192.0.2.5"), "A@x.example", "r@y.example"); v.Reason != "retry" {
		t.Fatalf("converted triplet: %+v", v)
	}
	gl.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketTripletsV1) != nil {
			t.Error("old bucket left")
		}
		return nil
	})
}

func TestGreylistSweepsByItself(t *testing.T) {
	clk := testclock.New()
	gl, err := Open(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	ip := netip.MustParseAddr("192.0.2.1")
	gl.checkCommit(ip, "a@x.example", "r@y.example")
	clk.Add(30 * time.Minute)
	gl.checkCommit(ip, "b@x.example", "r@y.example")
	clk.Add(47*time.Hour + 40*time.Minute) // a's window closed, b's open; a sweep is due
	gl.checkCommit(ip, "c@x.example", "r@y.example")
	gl.wg.Wait()
	if n := gl.count(bucketTriplets); n != 2 {
		t.Fatalf("%d triplets after the automatic sweep, want 2", n)
	}
}

// BenchmarkGreylistCheck: new triplets (a write each, fsync), new
// triplets of a /24 already at its pending cap (the cursor walk over its
// greylistMaxPendingPerNet entries, and one eviction), and known passed
// triplets (the read-only fast path).
func BenchmarkGreylistCheck(b *testing.B) {
	for _, name := range []string{"new", "new-full-net", "passed"} {
		b.Run(name, func(b *testing.B) {
			clk := testclock.New()
			gl, err := Open(greyTestConfig(filepath.Join(b.TempDir(), "g.db")), nil, clk.Now)
			if err != nil {
				b.Fatal(err)
			}
			defer gl.Close()
			ip := netip.MustParseAddr("192.0.2.1")
			known := name == "passed"
			switch name {
			case "passed":
				gl.checkCommit(ip, "a@x.example", "r@y.example")
				clk.Add(6 * time.Minute)
				gl.checkCommit(ip, "a@x.example", "r@y.example")
			case "new-full-net":
				nk := netKey(greyPrefix(ip))
				v := tripletVal{first: clk.Now().Unix(), last: clk.Now().Unix()}.bytes()
				gl.db.Update(func(tx *bolt.Tx) error {
					for i := range gl.maxPending {
						tx.Bucket(bucketTriplets).Put(tripletKey(nk, fmt.Sprintf("old%d@x.example", i), "r@y.example"), v)
					}
					return nil
				})
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				from := "a@x.example"
				if !known {
					from = fmt.Sprintf("s%d@x.example", i)
				}
				if v, err := gl.checkCommit(ip, from, "r@y.example"); err != nil || v.Pass != known {
					b.Fatalf("%+v %v", v, err)
				}
			}
		})
	}
}

// checkCommit is check plus the commit the session makes once the upstream
// accepted the recipient.
func (gl *Store) checkCommit(ip netip.Addr, from, to string) (Verdict, error) {
	v, err := gl.Check(ip, from, to)
	if err == nil && v.Retry != nil {
		err = gl.Commit(v.Retry, true)
	}
	return v, err
}
