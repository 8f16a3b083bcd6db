package greylist

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testclock"
)

func TestNormalizeSender(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice@example.com", "alice@example.com"},
		{"list-1234-5678@lists.example", "list-#-#@lists.example"},
		{"bounce+abc123@x.example", "bounce@x.example"},
		{"s5@x.example", "s5@x.example"},              // digits inside a word stay
		{"42@x.example", "#@x.example"},               // a number alone
		{"user.99.x@x.example", "user.#.x@x.example"}, // between dots
		{"a_1@x.example", "a_1@x.example"},            // _ is a word character
		{"no-at-sign-123", "no-at-sign-123"},          // not an address: as is
		{"", ""},
		{"srs0=ab12=cd=a.example=u@b.example", "srs0=ab12=cd=a.example=u@b.example"},
	} {
		if got := NormalizeSender(tc.in); got != tc.want {
			t.Errorf("NormalizeSender(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Two VERP senders of one list make one triplet: the retry of the
// second message passes as the first one's retry would.
func TestVERPSendersShareTriplet(t *testing.T) {
	clk := testclock.New()
	gl, err := Open(greyTestConfig(filepath.Join(t.TempDir(), "g.db")), nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	ip := netip.MustParseAddr("192.0.2.7")
	if v, _ := gl.Check(ip, "list-1001@lists.example", "r@y.example"); v.Pass || v.Reason != "new" {
		t.Fatalf("first: %+v", v)
	}
	clk.Add(6 * time.Minute)
	v, _ := gl.Check(ip, "list-1002@lists.example", "r@y.example")
	if !v.Pass || v.Reason != "retry" || v.Delayed != 6*time.Minute {
		t.Fatalf("second VERP sender: %+v, want a retry delayed 6m", v)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("off: %v", err)
	}
	c.Enabled, c.RetryWindow = true, c.Delay
	if err := c.Validate(); err == nil {
		t.Fatal("retry_window = delay accepted")
	}
	a, b := DefaultConfig(), DefaultConfig()
	b.AutoAllowlist = 2
	if k := SameStore(a, b); k != "auto_allowlist" {
		t.Fatalf("SameStore = %q", k)
	}
	if k := SameStore(a, DefaultConfig()); k != "" {
		t.Fatalf("SameStore of equal configs = %q", k)
	}
}
