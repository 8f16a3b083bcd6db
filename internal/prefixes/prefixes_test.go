package prefixes

import (
	"net/netip"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.0/24", "192.0.2.0/24"},
		{" 192.0.2.9/24 ", "192.0.2.0/24"},
		{"192.0.2.1", "192.0.2.1/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{"fe80::1%eth0", ""},
		{"mail.example.com", ""},
		{"192.0.2.0/33", ""},
	} {
		p, err := Parse(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%q: accepted as %s", tc.in, p)
		case tc.want != "" && (err != nil || p != netip.MustParsePrefix(tc.want)):
			t.Errorf("%q: %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	if _, err := ParseList([]string{"192.0.2.1", "nope"}); err == nil {
		t.Error("ParseList accepted a bad entry")
	}
}
