package ban

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestAllowlistContains(t *testing.T) {
	host := func() ([]netip.Prefix, error) {
		return []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("::ffff:198.51.100.9/128")}, nil
	}
	a, err := NewAllowlist([]string{"192.0.2.0/24", "203.0.113.5", "2001:db8:1::/48", " 10.1.2.3/16 "}, host)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		prefix string
		want   bool
	}{
		{"127.0.0.1/32", true},           // loopback, always
		{"127.200.1.1/32", true},         // all of 127/8
		{"::1/128", true},                // IPv6 loopback
		{"::2/128", false},               //
		{"::ffff:127.0.0.1/128", true},   // IPv4-mapped loopback
		{"192.0.2.77/32", true},          // configured CIDR
		{"192.0.3.1/32", false},          //
		{"203.0.113.5/32", true},         // configured single address
		{"203.0.113.6/32", false},        //
		{"203.0.113.0/24", true},         // prefix overlapping an allowlisted address
		{"203.0.0.0/16", true},           // wider still
		{"::ffff:203.0.113.5/128", true}, // mapped form of the address
		{"::ffff:203.0.113.0/120", true}, // mapped form of the /24
		{"198.51.100.7/32", true},        // host address (source)
		{"198.51.100.9/32", true},        // host address given mapped
		{"198.51.100.8/32", false},       // neighbour of the host: not allowlisted
		{"2001:db8:1:5::1/128", true},    // inside configured v6 /48
		{"2001:db8::/32", true},          // contains configured v6 /48
		{"2001:db8:2::1/128", false},     //
		{"10.1.200.200/32", true},        // "10.1.2.3/16" is masked to 10.1.0.0/16
		{"8.8.8.8/32", false},            //
	}
	for _, tt := range tests {
		if got := a.Contains(netip.MustParsePrefix(tt.prefix)); got != tt.want {
			t.Errorf("Contains(%s) = %v, want %v", tt.prefix, got, tt.want)
		}
	}
	if !a.Contains(netip.Prefix{}) {
		t.Error("an invalid prefix must count as allowlisted")
	}
}

func TestAllowlistBadEntries(t *testing.T) {
	_, err := NewAllowlist([]string{"192.0.2.0/24", "bogus", "10.0.0.0/33", "fe80::1%eth0"})
	if err == nil {
		t.Fatal("no error for bad entries")
	}
	for _, want := range []string{`"bogus"`, `"10.0.0.0/33"`, `"fe80::1%eth0"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestAllowlistRefresh(t *testing.T) {
	addrs := []netip.Prefix{netip.MustParsePrefix("198.51.100.1/32")}
	var fail error
	a, err := NewAllowlist(nil, func() ([]netip.Prefix, error) { return addrs, fail })
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := netip.MustParsePrefix("198.51.100.1/32"), netip.MustParsePrefix("198.51.100.2/32")
	if !a.Contains(p1) || a.Contains(p2) {
		t.Fatal("initial source not applied")
	}
	addrs = []netip.Prefix{p2}
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	if a.Contains(p1) || !a.Contains(p2) {
		t.Error("Refresh did not replace the host addresses")
	}
	addrs, fail = nil, errors.New("netlink down")
	if err := a.Refresh(); err == nil {
		t.Error("Refresh hid the source error")
	}
	if !a.Contains(p2) {
		t.Error("a failed refresh dropped the previous host addresses")
	}
}

func TestAllowHostAddrsHasLoopback(t *testing.T) {
	ps, err := HostAddrs()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range ps {
		if p == netip.MustParsePrefix("127.0.0.1/32") {
			found = true
		}
		if p.Bits() != p.Addr().BitLen() {
			t.Errorf("host address %s is not a single address", p)
		}
	}
	if !found {
		t.Errorf("HostAddrs = %v, want 127.0.0.1/32 among them", ps)
	}
}

func TestAllowTooBroad(t *testing.T) {
	tests := []struct {
		prefix string
		want   bool
	}{
		{"192.0.2.1/32", false},
		{"192.0.2.0/24", false},
		{"192.0.0.0/23", true},
		{"0.0.0.0/0", true},
		{"2001:db8::1/128", false},
		{"2001:db8::/48", false},
		{"2001:db8::/47", true},
		{"::/0", true},
	}
	for _, tt := range tests {
		if got := tooBroad(netip.MustParsePrefix(tt.prefix), 24, 48); got != tt.want {
			t.Errorf("tooBroad(%s) = %v, want %v", tt.prefix, got, tt.want)
		}
	}
}

// One failing source keeps its last good answer even while another source
// answers (the daemon's configured allowlist is a source that never fails).
func TestAllowlistRefreshPerSource(t *testing.T) {
	host := netip.MustParsePrefix("198.51.100.1/32")
	cfgd := netip.MustParsePrefix("192.0.2.0/24")
	var fail error
	a, err := NewAllowlist(nil,
		func() ([]netip.Prefix, error) { return []netip.Prefix{cfgd}, nil },
		func() ([]netip.Prefix, error) {
			if fail != nil {
				return nil, fail
			}
			return []netip.Prefix{host}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	fail = errors.New("too many open files")
	if err := a.Refresh(); err == nil {
		t.Error("error hidden")
	}
	if !a.Contains(host) || !a.Contains(cfgd) {
		t.Error("a failing source lost its last good addresses")
	}
}
