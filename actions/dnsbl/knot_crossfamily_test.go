package dnsbl

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestKnotIPv4WildcardDoesNotAnswerIPv6 checks with a real secondary
// (knotd, RFC 4592 wildcards) that the /24 wildcard of 2.6.0.0/24, whose
// name is also the IPv6 nibble path of 2600::/12, answers no IPv6
// address, and that an IPv6 listing under 2607::/16 hides no IPv4 ban.
func TestKnotIPv4WildcardDoesNotAnswerIPv6(t *testing.T) {
	k := startKnotSecondary(t, func(p *Publisher) {
		ctx := context.Background()
		until := time.Now().Add(time.Hour)
		p.Apply(ctx, mkBan("2.6.0.0/24", "manual", until))
		p.Apply(ctx, mkBan("2607:1::5/128", "manual", until)) // its path makes 7.0.6.2 exist

	})
	p, aOf := k.p, k.aOf
	for ip, want := range map[string]string{"2.6.0.77": "127.0.0.10", "2.6.0.7": "127.0.0.10", "2.6.0.9": "127.0.0.10",
		"2607:1::5": "127.0.0.10", "2600:1f18::1": "NXDOMAIN", "2607:f8b0:4004:c1b::1a": "NXDOMAIN", "260a::1": "NXDOMAIN"} {
		if got := aOf(ip); got != want {
			t.Errorf("Knot answers %s for %s, want %s (the server: listed=%v)", got, ip, want, func() bool { _, ok := p.index.Lookup(netip.MustParseAddr(ip), time.Now()); return ok }())
		}
	}
}
