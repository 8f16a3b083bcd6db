package peers

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const testZone = "bl.mx2.example.org."

// nibbles is the reversed-nibble name of the first n nibbles of a.
func nibbles(a string, n int) string {
	b := netip.MustParseAddr(a).As16()
	var labels []string
	for i := n - 1; i >= 0; i-- {
		v := b[i/2]
		if i%2 == 0 {
			v >>= 4
		}
		labels = append(labels, string("0123456789abcdef"[v&0xf]))
	}
	return strings.Join(labels, ".")
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string // prefix, or "skip:REASON"
	}{
		{"4.3.2.1", "1.2.3.4/32"},
		{"7.113.0.203", "203.0.113.7/32"},
		{"*.113.0.203", "203.0.113.0/24"},
		{"*.51.198", "198.51.0.0/16"},
		{"*.198", "198.0.0.0/8"},
		{"0.113.0.203", "203.0.113.0/32"},
		{"2.0.0.127", "skip:" + SkipTest}, // RFC 5782 test entry
		{"1.0.0.127", "skip:" + SkipTest}, // the must-not-be-listed test
		{"*.127", "skip:" + SkipTest},     // all of loopback
		{"256.113.0.203", "skip:" + SkipRange},
		{"7.999.0.203", "skip:" + SkipRange},
		{"07.113.0.203", "skip:" + SkipGarbage}, // leading zero: not how octets are written
		{"-1.113.0.203", "skip:" + SkipGarbage},
		{"x.113.0.203", "skip:" + SkipGarbage},
		{"7.113.0", "skip:" + SkipGarbage},       // three octets without *
		{"5.7.113.0.203", "skip:" + SkipGarbage}, // five labels
		{"7.*.0.203", "skip:" + SkipGarbage},     // * inside
		{"*.*.0.203", "skip:" + SkipGarbage},     // two *
		{"*", "skip:" + SkipGarbage},             // * alone
		{"", "skip:" + SkipGarbage},              // the apex
		{"1.0.0.0", "skip:" + SkipInvalid},       // 0/8
		{"255.255.255.255", "skip:" + SkipInvalid},
		{"1.0.0.224", "skip:" + SkipInvalid}, // multicast
		{"1.0.254.169", "skip:" + SkipInvalid},
		{"0.0.0.0", "skip:" + SkipInvalid},
		{nibbles("2001:db8::7", 32), "2001:db8::7/128"},
		{"*." + nibbles("2001:db8:1::", 12), "2001:db8:1::/48"},
		{"*." + nibbles("2001:db8::", 4), "2001::/16"},
		{nibbles("::ffff:127.0.0.2", 32), "skip:" + SkipTest}, // RFC 5782 IPv6 test entry
		{nibbles("::2", 32), "skip:" + SkipTest},              // the IPv6 test entry clients probe
		{nibbles("::ffff:203.0.113.7", 32), "skip:" + SkipInvalid},
		{nibbles("::1", 32), "skip:" + SkipInvalid},
		{nibbles("::", 32), "skip:" + SkipInvalid},
		{nibbles("ff02::1", 32), "skip:" + SkipInvalid},
		{nibbles("fe80::1", 32), "skip:" + SkipInvalid},
		{"g." + nibbles("2001:db8::7", 31), "skip:" + SkipRange},
		{"10." + nibbles("2001:db8::7", 31), "skip:" + SkipRange},
		{nibbles("2001:db8::7", 31), "skip:" + SkipGarbage}, // 31 nibbles without *
		{"a." + nibbles("2001:db8::7", 32), "skip:" + SkipGarbage},
	} {
		full := testZone
		if tc.name != "" {
			full = tc.name + "." + testZone
		}
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseName(full, testZone)
			got := p.String()
			if err != nil {
				got = "skip:" + SkipReason(err)
			}
			if got != tc.want {
				t.Fatalf("ParseName(%q) = %s (%v), want %s", full, got, err, tc.want)
			}
		})
	}
}

func TestParseNameOutsideTheZone(t *testing.T) {
	for _, name := range []string{"7.113.0.203.bl.mx3.example.org.", "7.113.0.203xbl.mx2.example.org.", "example.org.", "7.113.0.203.mx2.example.org."} {
		if p, err := ParseName(name, testZone); err == nil || SkipReason(err) != SkipGarbage {
			t.Errorf("ParseName(%q) = %s, %v; want garbage", name, p, err)
		}
	}
}

func TestParseTXT(t *testing.T) {
	until := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		txt              string
		detector, reason string
		until            time.Time
	}{
		{"dictionary: 5 unknown recipients in 10m; until 2026-12-01T18:00:00Z", "dictionary", "5 unknown recipients in 10m", until},
		{"sasl: 10 failed logins: auth; until 2026-12-01T18:00:00Z", "sasl", "10 failed logins: auth", until},
		{"manual: spam run; until 2026-12-01T20:00:00+02:00", "manual", "spam run", until},
		{"listed by hand", "", "listed by hand", time.Time{}},
		{"dictionary: no until here", "", "dictionary: no until here", time.Time{}},
		{"Spam source; until never", "", "Spam source; until never", time.Time{}},
		{"Some Words: x; until 2026-12-01T18:00:00Z", "", "Some Words: x", until},
		{"bad\x00\nline: x; until 2026-12-01T18:00:00Z", "", "bad  line: x", until},
		{strings.Repeat("é", 300), "", strings.Repeat("é", 100) + "…", time.Time{}},
	} {
		d, r, u := ParseTXT(tc.txt)
		if d != tc.detector || r != tc.reason || !u.Equal(tc.until) {
			t.Errorf("ParseTXT(%q) = %q, %q, %s; want %q, %q, %s", tc.txt, d, r, u, tc.detector, tc.reason, tc.until)
		}
	}
}

func FuzzParsePeerName(f *testing.F) {
	for _, s := range []string{"7.113.0.203", "*.113.0.203", "2.0.0.127", "*." + nibbles("2001:db8:1::", 12),
		nibbles("2001:db8::7", 32), "256.1.1.1", "*.*", "a.b.c.d", "..", "*"} {
		f.Add(s + "." + testZone)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := ParseName(name, testZone)
		if err != nil {
			if SkipReason(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		// Anything accepted is a canonical, bannable prefix under the zone.
		switch {
		case !p.IsValid(), p.Masked() != p, p.Bits() == 0, p.Addr().Is4In6(), p.Addr().Zone() != "":
			t.Fatalf("ParseName(%q) = %s: not a canonical prefix", name, p)
		case p.Addr().Is4() && p.Addr().As4()[0] == 127:
			t.Fatalf("ParseName(%q) = %s: a test entry accepted", name, p)
		case !strings.HasSuffix(strings.ToLower(name), "."+testZone):
			t.Fatalf("ParseName(%q) = %s: outside the zone", name, p)
		}
		// The name is the prefix's own: printing it back gives the name.
		if back := reverseName(p); back+"."+testZone != strings.ToLower(name) {
			t.Fatalf("ParseName(%q) = %s, which is written %q", name, p, back)
		}
	})
}

// reverseName writes p the way a publisher does (the inverse of ParseName).
func reverseName(p netip.Prefix) string {
	var labels []string
	if p.Addr().Is4() {
		b := p.Addr().As4()
		n := p.Bits() / 8
		for i := n - 1; i >= 0; i-- {
			labels = append(labels, itoa(int(b[i])))
		}
		if n < 4 {
			labels = append([]string{"*"}, labels...)
		}
		return strings.Join(labels, ".")
	}
	n := p.Bits() / 4
	s := nibbles(p.Addr().String(), n)
	if n < 32 {
		s = "*." + s
	}
	return s
}

func itoa(v int) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for v > 0 {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
	}
	return string(b)
}
