package firewall

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/mxguard/mxguard/actions/ban"
)

func TestNFTablesConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(c *NFTablesConfig)
		want []string // substrings of the error; none: valid
	}{
		{"defaults", func(c *NFTablesConfig) {}, nil},
		{"reject lower case", func(c *NFTablesConfig) { c.Target = "reject" }, nil},
		{"all tcp", func(c *NFTablesConfig) { c.Ports = nil }, nil},
		{"set_only ip", func(c *NFTablesConfig) { c.SetOnly, c.Family, c.IPv6 = true, "ip", false }, nil},
		{"bad target", func(c *NFTablesConfig) { c.Target = "ACCEPT" }, []string{`target "ACCEPT"`}},
		{"bad names", func(c *NFTablesConfig) { c.Table, c.SetV4 = "a b", "1x" }, []string{`table "a b"`, `set_v4 "1x"`}},
		{"same set names", func(c *NFTablesConfig) { c.SetV6 = c.SetV4 }, []string{"same name as set_v4"}},
		{"ports", func(c *NFTablesConfig) { c.Ports = []int{0, 25, 25, 70000} }, []string{"0 is not", "25 listed twice", "70000 is not"}},
		{"own table not inet", func(c *NFTablesConfig) { c.Family = "ip" }, []string{"always inet"}},
		{"set_only ip with ipv6", func(c *NFTablesConfig) { c.SetOnly, c.Family = true, "ip" }, []string{"ipv6: false"}},
		{"set_only bridge", func(c *NFTablesConfig) { c.SetOnly, c.Family = true, "bridge" }, []string{`family "bridge"`}},
		{"priority", func(c *NFTablesConfig) { c.Priority = 1 << 40 }, []string{"priority"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultNFTablesConfig()
			c.edit(&cfg)
			err := cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want errors %q, got none", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The interval for a prefix is [first, last+1) from the library's
// NetFirstAndLastIP; a range reaching the top address has no end.
func TestPrefixInterval(t *testing.T) {
	cases := []struct{ prefix, start, end, str string }{
		{"192.0.2.7/32", "192.0.2.7", "192.0.2.8", "192.0.2.7"},
		{"198.51.100.0/24", "198.51.100.0", "198.51.101.0", "198.51.100.0/24"},
		{"10.0.0.0/8", "10.0.0.0", "11.0.0.0", "10.0.0.0/8"},
		{"203.0.113.255/32", "203.0.113.255", "203.0.114.0", "203.0.113.255"},
		{"255.255.255.0/24", "255.255.255.0", "", "255.255.255.0/24"},
		{"255.255.255.255/32", "255.255.255.255", "", "255.255.255.255"},
		{"2001:db8::7/128", "2001:db8::7", "2001:db8::8", "2001:db8::7"},
		{"2001:db8:5::/48", "2001:db8:5::", "2001:db8:6::", "2001:db8:5::/48"},
		{"2001:db8::ffff/128", "2001:db8::ffff", "2001:db8::1:0", "2001:db8::ffff"},
		{"8000::/1", "8000::", "", "8000::/1"},
	}
	for _, c := range cases {
		iv, err := prefixInterval(netip.MustParsePrefix(c.prefix))
		if err != nil {
			t.Fatalf("%s: %v", c.prefix, err)
		}
		var wantEnd netip.Addr
		if c.end != "" {
			wantEnd = netip.MustParseAddr(c.end)
		}
		if iv.start != netip.MustParseAddr(c.start) || iv.end != wantEnd {
			t.Errorf("%s: got [%s, %s), want [%s, %s)", c.prefix, iv.start, iv.end, c.start, c.end)
		}
		if got := iv.String(); got != c.str {
			t.Errorf("%s: renders as %q, want %q", c.prefix, got, c.str)
		}
		if p, ok := rangePrefix(iv.start, iv.end); !ok || p != netip.MustParsePrefix(c.prefix) {
			t.Errorf("%s: rangePrefix gives %s %v", c.prefix, p, ok)
		}
	}
	// A range that is no prefix renders as start-last.
	iv := nftInterval{start: netip.MustParseAddr("10.0.0.1"), end: netip.MustParseAddr("10.0.0.4")}
	if got := iv.String(); got != "10.0.0.1-10.0.0.3" {
		t.Errorf("range renders as %q", got)
	}
}

// The kernel dumps starts and ends in any order; an end left without its
// start (the kernel expired the start) is skipped.
func TestKernelIntervals(t *testing.T) {
	el := func(a string, end bool, to time.Duration) nftables.SetElement {
		return nftables.SetElement{Key: netip.MustParseAddr(a).AsSlice(), IntervalEnd: end, Timeout: to}
	}
	elems := []nftables.SetElement{
		el("255.255.255.0", false, time.Hour),
		el("10.0.1.0", true, 0),
		el("10.0.0.0", false, time.Minute),
		el("10.0.3.0", true, 0), // orphan end
		el("10.0.1.0", false, 0),
		el("10.0.2.0", true, 0), // adjacent range: end of one = start of next
		el("2001:db8::", false, 0),
	}
	got := kernelIntervals(elems, true, true)
	want := []string{"10.0.0.0/24", "10.0.1.0/24", "255.255.255.0/24"}
	var gotS []string
	for _, iv := range got {
		gotS = append(gotS, iv.String())
	}
	if strings.Join(gotS, " ") != strings.Join(want, " ") {
		t.Fatalf("got %q, want %q", gotS, want)
	}
	if got[0].timeout != time.Minute || got[2].timeout != time.Hour {
		t.Errorf("timeouts lost: %+v", got)
	}
	single := kernelIntervals(elems[:1], false, true)
	if len(single) != 1 || single[0].String() != "255.255.255.0" {
		t.Errorf("non-interval set: %+v", single)
	}
}

func TestNFTModelCoverage(t *testing.T) {
	now := time.Now()
	m := newNFTModel()
	m.set(testPrefix("192.0.2.7/32"), now.Add(time.Hour))
	m.set(testPrefix("192.0.2.9/32"), now.Add(time.Hour))
	m.set(testPrefix("192.0.2.128/25"), now.Add(time.Hour))
	m.set(testPrefix("192.0.2.130/32"), now.Add(time.Hour))     // inside the /25
	m.set(testPrefix("198.51.100.0/24"), now.Add(-time.Second)) // over
	m.set(testPrefix("198.51.100.1/32"), time.Time{})           // no end
	cases := []struct {
		prefix  string
		covered bool
		in      bool
	}{
		{"192.0.2.7/32", false, true},
		{"192.0.2.130/32", true, false},
		{"192.0.2.128/25", false, true},
		{"198.51.100.1/32", false, true}, // its cover is over
		{"198.51.100.0/24", false, false},
	}
	for _, c := range cases {
		p := testPrefix(c.prefix)
		if got := m.covered(p, now); got != c.covered {
			t.Errorf("covered(%s) = %v", p, got)
		}
		if got := m.inKernel(p, now); got != c.in {
			t.Errorf("inKernel(%s) = %v", p, got)
		}
	}
	got := m.topInside(testPrefix("192.0.2.0/24"), now)
	want := []netip.Prefix{testPrefix("192.0.2.7/32"), testPrefix("192.0.2.9/32"), testPrefix("192.0.2.128/25")}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("topInside /24 = %v, want %v", got, want)
	}
	m.remove(testPrefix("192.0.2.128/25"))
	if !m.inKernel(testPrefix("192.0.2.130/32"), now) {
		t.Error("after removing the /25 the /32 inside is not in the kernel set")
	}
}

func dryNFT(t *testing.T, cfg NFTablesConfig, now time.Time) (*NFTables, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	a, err := NewNFTables(cfg, NFTablesOptions{DryRun: &out, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return a, &out
}

// Dry-run prints each transaction as an nft script and sends nothing.
func TestNFTablesDryRun(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	b := func(p string, d time.Duration) ban.Ban { return ban.Ban{Prefix: testPrefix(p), Until: now.Add(d)} }
	cases := []struct {
		name string
		cfg  func(c *NFTablesConfig)
		run  func(a *NFTables) error
		want string
	}{
		{"sync", func(c *NFTablesConfig) {}, func(a *NFTables) error {
			return a.Sync(ctx, []ban.Ban{b("192.0.2.7/32", time.Hour), b("2001:db8:5::/48", 90*time.Second), b("198.51.100.0/24", -time.Second)})
		}, `nft -f - <<'EOF'
add table inet mxguard
add set inet mxguard banned_v4 { type ipv4_addr; flags interval, timeout; }
add set inet mxguard banned_v6 { type ipv6_addr; flags interval, timeout; }
add chain inet mxguard input { type filter hook input priority -10; policy accept; }
flush chain inet mxguard input
add rule inet mxguard input ip saddr @banned_v4 tcp dport { 25, 465, 587 } counter drop comment "mxguard: ip saddr @banned_v4 tcp dport { 25, 465, 587 } counter drop"
add rule inet mxguard input ip6 saddr @banned_v6 tcp dport { 25, 465, 587 } counter drop comment "mxguard: ip6 saddr @banned_v6 tcp dport { 25, 465, 587 } counter drop"
EOF
nft -f - <<'EOF'
flush set inet mxguard banned_v4
add element inet mxguard banned_v4 { 192.0.2.7 timeout 3600s comment "mxguard" }
EOF
nft -f - <<'EOF'
flush set inet mxguard banned_v6
add element inet mxguard banned_v6 { 2001:db8:5::/48 timeout 90s comment "mxguard" }
EOF
`},
		{"reject all tcp v4 only", func(c *NFTablesConfig) { c.Target, c.Ports, c.IPv6, c.Priority = "reject", nil, false, 5 }, func(a *NFTables) error {
			return a.Sync(ctx, nil)
		}, `nft -f - <<'EOF'
add table inet mxguard
add set inet mxguard banned_v4 { type ipv4_addr; flags interval, timeout; }
add chain inet mxguard input { type filter hook input priority 5; policy accept; }
flush chain inet mxguard input
add rule inet mxguard input ip saddr @banned_v4 meta l4proto tcp counter reject with tcp reset comment "mxguard: ip saddr @banned_v4 meta l4proto tcp counter reject with tcp reset"
EOF
nft -f - <<'EOF'
flush set inet mxguard banned_v4
EOF
`},
		{"prefix replaces the bans inside it, unban brings them back", func(c *NFTablesConfig) { c.IPv6 = false }, func(a *NFTables) error {
			a.ready = true // structure shown above
			for _, x := range []ban.Ban{b("192.0.2.7/32", time.Hour), b("192.0.2.0/24", time.Minute), b("192.0.2.9/32", 2*time.Hour)} {
				if err := a.Apply(ctx, x); err != nil {
					return err
				}
			}
			if err := a.Apply(ctx, b("192.0.2.0/24", 2*time.Minute)); err != nil { // extended
				return err
			}
			return a.Revoke(ctx, testPrefix("192.0.2.0/24"))
		}, `nft -f - <<'EOF'
add element inet mxguard banned_v4 { 192.0.2.7 timeout 3600s comment "mxguard" }
EOF
nft -f - <<'EOF'
delete element inet mxguard banned_v4 { 192.0.2.7 }
add element inet mxguard banned_v4 { 192.0.2.0/24 timeout 60s comment "mxguard" }
EOF
nft -f - <<'EOF'
delete element inet mxguard banned_v4 { 192.0.2.0/24 }
add element inet mxguard banned_v4 { 192.0.2.0/24 timeout 120s comment "mxguard" }
EOF
nft -f - <<'EOF'
delete element inet mxguard banned_v4 { 192.0.2.0/24 }
add element inet mxguard banned_v4 { 192.0.2.7 timeout 3600s comment "mxguard" }
add element inet mxguard banned_v4 { 192.0.2.9 timeout 7200s comment "mxguard" }
EOF
`},
		{"cleanup", func(c *NFTablesConfig) {}, func(a *NFTables) error { return a.Cleanup(ctx) }, `nft -f - <<'EOF'
delete table inet mxguard
EOF
`},
		{"set_only never touches the structure", func(c *NFTablesConfig) { c.SetOnly, c.Table, c.SetV4, c.SetV6 = true, "filter", "bl4", "bl6" },
			func(a *NFTables) error {
				if err := a.Sync(ctx, []ban.Ban{b("192.0.2.7/32", time.Hour)}); err != nil {
					return err
				}
				return a.Cleanup(ctx)
			}, `nft -f - <<'EOF'
add element inet filter bl4 { 192.0.2.7 timeout 3600s comment "mxguard" }
EOF
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultNFTablesConfig()
			c.cfg(&cfg)
			a, out := dryNFT(t, cfg, now)
			if err := c.run(a); err != nil {
				t.Fatal(err)
			}
			if out.String() != c.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, c.want)
			}
		})
	}
}

func TestNFTablesRefusesBadPrefixes(t *testing.T) {
	cfg := DefaultNFTablesConfig()
	cfg.IPv6 = false
	a, out := dryNFT(t, cfg, time.Now())
	ctx := context.Background()
	for _, p := range []netip.Prefix{
		netip.MustParsePrefix("192.0.2.7/24"), // host bits
		netip.MustParsePrefix("0.0.0.0/0"),
		netip.MustParsePrefix("::ffff:192.0.2.7/128"),
		{},
	} {
		if err := a.Apply(ctx, ban.Ban{Prefix: p, Until: time.Now().Add(time.Hour)}); !errors.Is(err, ban.ErrInvalidPrefix) {
			t.Errorf("Apply(%s) = %v, want ErrInvalidPrefix", p, err)
		}
		if err := a.Revoke(ctx, p); !errors.Is(err, ban.ErrInvalidPrefix) {
			t.Errorf("Revoke(%s) = %v, want ErrInvalidPrefix", p, err)
		}
	}
	if err := a.Apply(ctx, testBan("2001:db8::1/128", time.Hour)); err == nil || !strings.Contains(err.Error(), "IPv6 is disabled") {
		t.Errorf("IPv6 with ipv6: false: %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("something was printed:\n%s", out)
	}
}
