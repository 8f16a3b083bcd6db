package smtpguard

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newGreyHarness is newHarness with greylisting on (a temporary DB) and
// the fake clock.
func newGreyHarness(t *testing.T, clk *fakeClock, mod func(*Config)) *harness {
	t.Helper()
	up := newFakeUpstream(t, false)
	cfg := testConfig(up.addr())
	cfg.Greylist.Enabled = true
	cfg.Greylist.DB = filepath.Join(t.TempDir(), "greylist.db")
	if mod != nil {
		mod(&cfg)
	}
	eng, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bl := &memBlocklist{}
	ev := &eventLog{eng: eng, bl: bl}
	return startGuard(t, cfg, Deps{Logger: testLogger(t), Sink: ev.sink, Blocklist: bl, now: clk.Now}, up, ev, bl)
}

func (f *fakeUpstream) sawLine(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.lines {
		if strings.EqualFold(l, s) {
			return true
		}
	}
	return false
}

// attempt runs one session from src: MAIL from, then each RCPT, and
// returns the RCPT reply codes and texts.
func attempt(t *testing.T, h *harness, src, from string, rcpts ...string) ([]int, []string) {
	t.Helper()
	c := dialFrom(t, h.addr, src)
	c.expect(220)
	c.cmd("EHLO mta.remote.example", 250)
	c.cmd("MAIL FROM:<"+from+">", 250)
	var codes []int
	var texts []string
	for _, r := range rcpts {
		c.send("RCPT TO:<" + r + ">\r\n")
		code, text := c.reply()
		codes = append(codes, code)
		texts = append(texts, text)
	}
	c.cmd("QUIT", 221)
	return codes, texts
}

func TestGreylistRetry(t *testing.T) {
	clk := newClock()
	h := newGreyHarness(t, clk, nil)

	codes, texts := attempt(t, h, "", "Sender@Remote.example", "alice@example.com")
	if codes[0] != 450 || !strings.Contains(texts[0], "450 4.2.0 <alice@example.com>: Recipient address rejected: Greylisted, see https://") ||
		!strings.HasSuffix(texts[0], "(try again in 300 s)") {
		t.Fatalf("first attempt: %d %q", codes[0], texts[0])
	}
	if h.up.sawLine("RCPT TO:<alice@example.com>") {
		t.Fatal("greylisted RCPT reached the upstream")
	}

	clk.add(time.Minute)
	codes, texts = attempt(t, h, "", "sender@remote.example", "ALICE@example.com")
	if codes[0] != 450 || !strings.HasSuffix(texts[0], "(try again in 240 s)") {
		t.Fatalf("early retry: %d %q", codes[0], texts[0])
	}

	clk.add(4*time.Minute + time.Second)
	codes, texts = attempt(t, h, "", "sender@remote.example", "alice@example.com", "bob@example.com")
	if codes[0] != 250 {
		t.Fatalf("retry after delay: %d %q", codes[0], texts[0])
	}
	if codes[1] != 450 {
		t.Fatalf("other recipient is its own triplet: %d %q", codes[1], texts[1])
	}
	if !h.up.sawLine("RCPT TO:<alice@example.com>") {
		t.Fatal("upstream did not see the RCPT that passed")
	}
	// a passed triplet keeps passing, days later
	clk.add(72 * time.Hour)
	if codes, texts := attempt(t, h, "", "sender@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatalf("passed triplet later: %d %q", codes[0], texts[0])
	}
	// the same /24 counts as the same client
	if codes, texts := attempt(t, h, "127.0.0.9", "sender@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatalf("same /24: %d %q", codes[0], texts[0])
	}
	// another /24 does not
	if codes, _ := attempt(t, h, "127.0.1.9", "sender@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("other /24: %d", codes[0])
	}

	ev := h.ev.find(t, event.KindReject, event.ReasonGreylisted)
	if ev.Abuse || ev.Code != 450 || ev.DSN != "4.2.0" || ev.To != "alice@example.com" || ev.From != "Sender@Remote.example" {
		t.Errorf("event %+v", ev)
	}
	if st := h.g.Stats(); st.Greylisted != 4 {
		t.Errorf("Stats.Greylisted = %d, want 4", st.Greylisted)
	}
}

func TestGreylistWindowExpires(t *testing.T) {
	clk := newClock()
	h := newGreyHarness(t, clk, nil)
	if codes, _ := attempt(t, h, "", "a@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("first: %d", codes[0])
	}
	clk.add(49 * time.Hour) // past retry_window 48h: starts over
	codes, texts := attempt(t, h, "", "a@remote.example", "alice@example.com")
	if codes[0] != 450 || !strings.HasSuffix(texts[0], "(try again in 300 s)") {
		t.Fatalf("late retry: %d %q", codes[0], texts[0])
	}
	clk.add(5 * time.Minute)
	if codes, texts := attempt(t, h, "", "a@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatalf("retry after restart: %d %q", codes[0], texts[0])
	}
	// unused for more than max_age: greylisted again
	clk.add(36 * 24 * time.Hour)
	if codes, _ := attempt(t, h, "", "a@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("after max_age: %d", codes[0])
	}
}

func TestGreylistAutoAllowlist(t *testing.T) {
	clk := newClock()
	h := newGreyHarness(t, clk, func(c *Config) { c.Greylist.AutoAllowlist = 2 })
	for _, from := range []string{"a@remote.example", "b@remote.example"} {
		if codes, _ := attempt(t, h, "", from, "alice@example.com"); codes[0] != 450 {
			t.Fatalf("%s first: %d", from, codes[0])
		}
	}
	// a new triplet before the client has passed twice: still greylisted
	if codes, _ := attempt(t, h, "", "c@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("c first: %d", codes[0])
	}
	clk.add(6 * time.Minute)
	for _, from := range []string{"a@remote.example", "b@remote.example"} {
		if codes, _ := attempt(t, h, "", from, "alice@example.com"); codes[0] != 250 {
			t.Fatalf("%s retry: %d", from, codes[0])
		}
	}
	// two passes: the /24 skips greylisting for anything new
	if codes, texts := attempt(t, h, "127.0.0.7", "new@elsewhere.example", "bob@example.com"); codes[0] != 250 {
		t.Fatalf("auto-allowlisted client: %d %q", codes[0], texts[0])
	}
	if codes, _ := attempt(t, h, "127.0.2.1", "new@elsewhere.example", "bob@example.com"); codes[0] != 450 {
		t.Fatalf("other network: %d", codes[0])
	}
	// and forgets it after max_age unused
	clk.add(36 * 24 * time.Hour)
	if codes, _ := attempt(t, h, "", "newer@elsewhere.example", "bob@example.com"); codes[0] != 450 {
		t.Fatalf("after max_age: %d", codes[0])
	}
}

func TestGreylistAllowlistedClientSkips(t *testing.T) {
	clk := newClock()
	h := newGreyHarness(t, clk, func(c *Config) { c.Allowlist = []string{"127.0.0.1"} })
	if codes, texts := attempt(t, h, "", "a@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatalf("allowlisted: %d %q", codes[0], texts[0])
	}
	if codes, _ := attempt(t, h, "127.0.0.2", "a@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("not allowlisted: %d", codes[0])
	}
}

// A real MTA with many recipients is greylisted on each and retries: it
// must reach neither the error limits nor a ban by the real detectors.
func TestGreylistIsNotAbuse(t *testing.T) {
	clk := newClock()
	h := newGreyHarness(t, clk, nil)
	var rcpts []string
	for i := range 25 { // hard_error_limit is 6
		rcpts = append(rcpts, fmt.Sprintf("user%d@example.com", i))
		h.up.users[rcpts[i]] = true // before any connection to the upstream
	}
	for range 4 {
		codes, texts := attempt(t, h, "", "list@remote.example", rcpts...)
		for i, c := range codes {
			if c != 450 {
				t.Fatalf("rcpt %d: %d %q", i, c, texts[i])
			}
		}
		clk.add(time.Minute)
	}
	clk.add(2 * time.Minute)
	codes, _ := attempt(t, h, "", "list@remote.example", rcpts...)
	for i, c := range codes {
		if c != 250 {
			t.Fatalf("after delay rcpt %d: %d", i, c)
		}
	}
	if _, banned := h.bl.Banned(mustAddr("127.0.0.1")); banned {
		t.Fatal("greylisted client banned")
	}
	h.ev.mu.Lock()
	defer h.ev.mu.Unlock()
	n := 0
	for _, ev := range h.ev.events {
		if ev.Reason == event.ReasonGreylisted {
			n++
			if ev.Abuse {
				t.Fatalf("abuse event %+v", ev)
			}
		}
		if ev.Kind == event.KindTooManyErrors {
			t.Fatalf("too many errors: %+v", ev)
		}
	}
	if n != 100 {
		t.Errorf("%d greylist events, want 100", n)
	}
	if len(h.ev.decisions) > 0 {
		t.Errorf("decisions %+v", h.ev.decisions)
	}
}

func greyTestConfig(path string) GreylistConfig {
	c := DefaultConfig().Greylist
	c.Enabled, c.DB = true, path
	return c
}

func TestGreylistPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	clk := newClock()
	ip := netip.MustParseAddr("2001:db8:1:2:3::4")
	gl, err := openGreylist(greyTestConfig(path), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := gl.checkCommit(ip, "a@b.example", "c@d.example"); err != nil || v.pass || v.reason != "new" {
		t.Fatalf("first: %+v %v", v, err)
	}
	// the file is locked while open
	cfg := greyTestConfig(path)
	if gl2, err := openGreylist(cfg, nil, nil); err == nil { // waits the 2s lock timeout
		gl2.close()
		t.Fatal("second open of a locked file succeeded")
	}
	if err := gl.close(); err != nil {
		t.Fatal(err)
	}
	clk.add(10 * time.Minute)
	gl, err = openGreylist(cfg, nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
	// another address of the same /64
	if v, err := gl.checkCommit(netip.MustParseAddr("2001:db8:1:2:ffff::1"), "A@B.example", "c@d.example"); err != nil || !v.pass || v.reason != "retry" {
		t.Fatalf("after reopen: %+v %v", v, err)
	}
	if v, _ := gl.checkCommit(netip.MustParseAddr("2001:db8:1:3::1"), "a@b.example", "c@d.example"); v.pass {
		t.Fatal("other /64 passed")
	}
}

func (gl *greylister) count(bucket []byte) int {
	n := 0
	gl.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	})
	return n
}

func TestGreylistSweep(t *testing.T) {
	clk := newClock()
	cfg := greyTestConfig(filepath.Join(t.TempDir(), "g.db"))
	cfg.AutoAllowlist = 1
	gl, err := openGreylist(cfg, nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
	gl.every = 1 << 62 // sweeps by hand only
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("198.51.100.1")
	gl.checkCommit(a, "old@x.example", "r@y.example") // passes at +6m, then unused
	clk.add(6 * time.Minute)
	if v, _ := gl.checkCommit(a, "old@x.example", "r@y.example"); !v.pass {
		t.Fatal("retry did not pass")
	}
	gl.checkCommit(b, "never@x.example", "r@y.example") // never retried
	clk.add(49 * time.Hour)
	gl.checkCommit(b, "fresh@x.example", "r@y.example") // new, within its window
	if n, err := gl.sweep(clk.Now()); err != nil || n != 1 {
		t.Fatalf("sweep after 49h: %d %v (want the unretried one only)", n, err)
	}
	clk.add(34 * 24 * time.Hour) // old: 35d+ since last seen; client a too
	if n, err := gl.sweep(clk.Now()); err != nil || n != 3 {
		t.Fatalf("sweep after max_age: %d %v (want old triplet, fresh (window), client a)", n, err)
	}
	if gl.count(bucketTriplets) != 0 || gl.count(bucketClients) != 0 {
		t.Fatalf("left: %d triplets, %d clients", gl.count(bucketTriplets), gl.count(bucketClients))
	}
}

func TestGreylistCap(t *testing.T) {
	clk := newClock()
	cfg := greyTestConfig(filepath.Join(t.TempDir(), "g.db"))
	gl, err := openGreylist(cfg, nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
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
			clk := newClock()
			gl, err := openGreylist(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			defer gl.close()
			gl.maxCount, gl.every, gl.batch = 100, 1<<62, tc.batch
			passedIP, pendingIP := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")
			gl.checkCommit(passedIP, "friend@x.example", "r@y.example")
			clk.add(6 * time.Minute)
			if v, _ := gl.checkCommit(passedIP, "friend@x.example", "r@y.example"); v.reason != "retry" {
				t.Fatalf("friend: %+v", v)
			}
			if v, _ := gl.checkCommit(pendingIP, "Legit@x.example", "r@y.example"); v.reason != "new" {
				t.Fatalf("legit: %+v", v)
			}
			clk.add(time.Minute)
			for n := range tc.nets {
				for i := range tc.perNet {
					ip := netip.AddrFrom4([4]byte{203, 0, byte(n), byte(i)})
					if v, _ := gl.checkCommit(ip, fmt.Sprintf("bot%d@spam.example", i), "r@y.example"); v.reason != "new" {
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
			clk.add(5 * time.Minute)
			if v, _ := gl.checkCommit(pendingIP, "legit@x.example", "R@y.example"); v.reason != "retry" {
				t.Errorf("legitimate pending triplet evicted: %+v", v)
			}
			if v, _ := gl.checkCommit(passedIP, "friend@x.example", "r@y.example"); v.reason != "passed" {
				t.Errorf("passed triplet evicted: %+v", v)
			}
		})
	}
}

// Beyond maxPending pending triplets, a network's oldest pending ones
// make room; other networks are not touched.
func TestGreylistMaxPendingPerNetwork(t *testing.T) {
	clk := newClock()
	gl, err := openGreylist(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
	gl.maxPending, gl.every = 5, 1<<62
	other := netip.MustParseAddr("198.51.100.1")
	gl.checkCommit(other, "ok@x.example", "r@y.example")
	for i := range 8 {
		clk.add(time.Second)
		gl.checkCommit(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), fmt.Sprintf("s%d@x.example", i), "r@y.example")
	}
	if got := gl.count(bucketTriplets); got != 6 {
		t.Fatalf("%d triplets, want 5 of the flooding /24 and 1 other", got)
	}
	for i := 3; i < 8; i++ { // the newest stay (early: read only)
		if v, _ := gl.check(netip.MustParseAddr("192.0.2.200"), fmt.Sprintf("s%d@x.example", i), "r@y.example"); v.reason != "early" {
			t.Fatalf("s%d: %+v", i, v)
		}
	}
	clk.add(5 * time.Minute)
	if v, _ := gl.checkCommit(other, "ok@x.example", "r@y.example"); v.reason != "retry" {
		t.Fatalf("other network: %+v", v)
	}
	if v, _ := gl.checkCommit(netip.MustParseAddr("192.0.2.9"), "s0@x.example", "r@y.example"); v.reason != "new" {
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
	clk := newClock()
	gl, err := openGreylist(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
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
	clk := newClock()
	gl, err := openGreylist(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
	ip := netip.MustParseAddr("192.0.2.1")
	gl.checkCommit(ip, "a@x.example", "r@y.example")
	st := gl.db.Stats()
	before := st.TxStats.GetWrite()
	clk.add(time.Minute)
	if v, _ := gl.checkCommit(ip, "a@x.example", "r@y.example"); v.reason != "early" || v.wait != 4*time.Minute {
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
	clk := newClock()
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
	gl, err := openGreylist(greyTestConfig(path), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
	clk.add(6 * time.Minute)
	if v, _ := gl.checkCommit(netip.MustParseAddr("192.0.2.5"), "A@x.example", "r@y.example"); v.reason != "retry" {
		t.Fatalf("converted triplet: %+v", v)
	}
	gl.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketTripletsV1) != nil {
			t.Error("old bucket left")
		}
		return nil
	})
}

func TestGreylistConfig(t *testing.T) {
	var c Config = DefaultConfig()
	if err := yaml.Unmarshal([]byte("greylist: {enabled: true, delay: 1m, retry_window: 2d, max_age: 35d, auto_allowlist: 3}"), &c); err != nil {
		t.Fatal(err)
	}
	gl := c.Greylist
	if !gl.Enabled || gl.Delay.D() != time.Minute || gl.RetryWindow.D() != 48*time.Hour || gl.MaxAge.D() != 35*24*time.Hour || gl.AutoAllowlist != 3 || gl.MaxEntries != 1000000 {
		t.Fatalf("%+v", gl)
	}
	for _, tc := range []struct{ yaml, key string }{
		{"greylist: {enabled: true, delay: 10m, retry_window: 5m}", "greylist.retry_window"},
		{"greylist: {enabled: true, max_age: 1h}", "greylist.max_age"},
		{"greylist: {enabled: true, auto_allowlist: -1}", "greylist.auto_allowlist"},
	} {
		c := DefaultConfig()
		c.Hostname = "guard.test"
		if err := yaml.Unmarshal([]byte(tc.yaml), &c); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: %v", tc.yaml, err)
		}
	}
	c = DefaultConfig()
	if err := yaml.Unmarshal([]byte("greylist: {max_age: 3x}"), &c); err == nil {
		t.Error("bad duration accepted")
	}
	// enabled without a file: New refuses (the daemon fills it in)
	c = testConfig("127.0.0.1:1")
	c.Greylist.Enabled = true
	if _, err := New(c, Deps{}); err == nil || !strings.Contains(err.Error(), "greylist.db") {
		t.Errorf("New without db: %v", err)
	}
}

func TestGreylistSweepsByItself(t *testing.T) {
	clk := newClock()
	gl, err := openGreylist(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.close()
	ip := netip.MustParseAddr("192.0.2.1")
	gl.checkCommit(ip, "a@x.example", "r@y.example")
	clk.add(30 * time.Minute)
	gl.checkCommit(ip, "b@x.example", "r@y.example")
	clk.add(47*time.Hour + 40*time.Minute) // a's window closed, b's open; a sweep is due
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
			clk := newClock()
			gl, err := openGreylist(greyTestConfig(filepath.Join(b.TempDir(), "g.db")), nil, clk.Now)
			if err != nil {
				b.Fatal(err)
			}
			defer gl.close()
			ip := netip.MustParseAddr("192.0.2.1")
			known := name == "passed"
			switch name {
			case "passed":
				gl.checkCommit(ip, "a@x.example", "r@y.example")
				clk.add(6 * time.Minute)
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
				if v, err := gl.checkCommit(ip, from, "r@y.example"); err != nil || v.pass != known {
					b.Fatalf("%+v %v", v, err)
				}
			}
		})
	}
}

// checkCommit is check plus the commit the session makes once the upstream
// accepted the recipient.
func (gl *greylister) checkCommit(ip netip.Addr, from, to string) (greyVerdict, error) {
	v, err := gl.check(ip, from, to)
	if err == nil && v.retry != nil {
		err = gl.commit(v.retry, true)
	}
	return v, err
}

// A retry to an address the upstream refuses is never recorded as passed
// and never counts toward auto_allowlist: a harvester that retries cannot
// get its network allowlisted, and its retries meet Postfix's 550s.
func TestGreylistRetryRefusedUpstreamNotCommitted(t *testing.T) {
	clk := newClock()
	h := newGreyHarness(t, clk, func(c *Config) { c.Greylist.AutoAllowlist = 1 })
	if codes, _ := attempt(t, h, "", "spam@remote.example", "nosuchuser@example.com"); codes[0] != 450 {
		t.Fatalf("first: %d", codes[0])
	}
	clk.add(6 * time.Minute)
	if codes, texts := attempt(t, h, "", "spam@remote.example", "nosuchuser@example.com"); codes[0] != 550 {
		t.Fatalf("retry to an unknown user: %d %q (want the upstream's 550)", codes[0], texts[0])
	}
	// neither the triplet nor the network passed
	if codes, _ := attempt(t, h, "", "spam@remote.example", "nosuchuser@example.com"); codes[0] != 550 {
		t.Fatalf("again: %d", codes[0])
	}
	if codes, _ := attempt(t, h, "127.0.0.8", "other@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("network allowlisted by a refused retry: %d", codes[0])
	}
}
