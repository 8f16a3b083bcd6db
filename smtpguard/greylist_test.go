package smtpguard

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/testclock"
)

// newGreyHarness is newHarness with greylisting on (a temporary DB) and
// the fake clock.
func newGreyHarness(t *testing.T, clk *testclock.Clock, mod func(*Config)) *harness {
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
	clk := testclock.New()
	h := newGreyHarness(t, clk, nil)

	codes, texts := attempt(t, h, "", "Sender@Remote.example", "alice@example.com")
	if codes[0] != 450 || !strings.Contains(texts[0], "450 4.2.0 <alice@example.com>: Recipient address rejected: Greylisted, see https://") ||
		!strings.HasSuffix(texts[0], "(try again in 300 s)") {
		t.Fatalf("first attempt: %d %q", codes[0], texts[0])
	}
	if h.up.sawLine("RCPT TO:<alice@example.com>") {
		t.Fatal("greylisted RCPT reached the upstream")
	}

	clk.Add(time.Minute)
	codes, texts = attempt(t, h, "", "sender@remote.example", "ALICE@example.com")
	if codes[0] != 450 || !strings.HasSuffix(texts[0], "(try again in 240 s)") {
		t.Fatalf("early retry: %d %q", codes[0], texts[0])
	}

	clk.Add(4*time.Minute + time.Second)
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
	clk.Add(72 * time.Hour)
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
	clk := testclock.New()
	h := newGreyHarness(t, clk, nil)
	if codes, _ := attempt(t, h, "", "a@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("first: %d", codes[0])
	}
	clk.Add(49 * time.Hour) // past retry_window 48h: starts over
	codes, texts := attempt(t, h, "", "a@remote.example", "alice@example.com")
	if codes[0] != 450 || !strings.HasSuffix(texts[0], "(try again in 300 s)") {
		t.Fatalf("late retry: %d %q", codes[0], texts[0])
	}
	clk.Add(5 * time.Minute)
	if codes, texts := attempt(t, h, "", "a@remote.example", "alice@example.com"); codes[0] != 250 {
		t.Fatalf("retry after restart: %d %q", codes[0], texts[0])
	}
	// unused for more than max_age: greylisted again
	clk.Add(36 * 24 * time.Hour)
	if codes, _ := attempt(t, h, "", "a@remote.example", "alice@example.com"); codes[0] != 450 {
		t.Fatalf("after max_age: %d", codes[0])
	}
}

func TestGreylistAutoAllowlist(t *testing.T) {
	clk := testclock.New()
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
	clk.Add(6 * time.Minute)
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
	clk.Add(36 * 24 * time.Hour)
	if codes, _ := attempt(t, h, "", "newer@elsewhere.example", "bob@example.com"); codes[0] != 450 {
		t.Fatalf("after max_age: %d", codes[0])
	}
}

func TestGreylistAllowlistedClientSkips(t *testing.T) {
	clk := testclock.New()
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
	clk := testclock.New()
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
		clk.Add(time.Minute)
	}
	clk.Add(2 * time.Minute)
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

// A retry to an address the upstream refuses is never recorded as passed
// and never counts toward auto_allowlist: a harvester that retries cannot
// get its network allowlisted, and its retries meet Postfix's 550s.
func TestGreylistRetryRefusedUpstreamNotCommitted(t *testing.T) {
	clk := testclock.New()
	h := newGreyHarness(t, clk, func(c *Config) { c.Greylist.AutoAllowlist = 1 })
	if codes, _ := attempt(t, h, "", "spam@remote.example", "nosuchuser@example.com"); codes[0] != 450 {
		t.Fatalf("first: %d", codes[0])
	}
	clk.Add(6 * time.Minute)
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
