package dnsbl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
)

// A change rendered on its paths only gives the journal the same
// difference as the whole region rendered before and after it.
func TestScopedRenderingGivesTheWholeDifference(t *testing.T) {
	until := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	randomBan := func(v4 bool) ban.Ban {
		var p netip.Prefix
		if v4 { // region 2.0.0.0/16: digit-only paths, nested and off-boundary bans
			a := netip.AddrFrom4([4]byte{2, 0, byte(rng.IntN(12)), byte(rng.IntN(12))})
			p, _ = a.Prefix([]int{16, 20, 23, 24, 24, 30, 32, 32, 32}[rng.IntN(9)])
		} else { // region 2001:db8:1::/48
			a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::%x", rng.IntN(6), rng.IntN(20)))
			p, _ = a.Prefix([]int{48, 56, 64, 66, 128, 128, 128}[rng.IntN(7)])
		}
		return ban.Ban{Prefix: p, Detector: []string{"manual", "dictionary"}[rng.IntN(2)], Reason: "r", Until: until}
	}
	diff := func(before, after map[string]record) map[string]string {
		d := map[string]string{}
		for n, r := range before {
			if a, ok := after[n]; !ok || a.placeholder != r.placeholder || a.ban.Detector != r.ban.Detector || a.ban.Prefix != r.ban.Prefix {
				d[n] = "changed"
			}
		}
		for n := range after {
			if _, ok := before[n]; !ok {
				d[n] = "added"
			}
		}
		return d
	}
	for round := 0; round < 300; round++ {
		v4 := round%2 == 0
		regionBits := 48
		if v4 {
			regionBits = 16
		}
		byPrefix := map[netip.Prefix]ban.Ban{}
		for len(byPrefix) < 40+rng.IntN(40) {
			b := randomBan(v4)
			byPrefix[b.Prefix] = b
		}
		var old []ban.Ban
		for _, b := range byPrefix {
			old = append(old, b)
		}
		// one to three changes: add, remove or replace
		cur := map[netip.Prefix]ban.Ban{}
		for k, v := range byPrefix {
			cur[k] = v
		}
		var scopes []netip.Prefix
		for range 1 + rng.IntN(3) {
			switch rng.IntN(3) {
			case 0:
				b := randomBan(v4)
				cur[b.Prefix] = b
				scopes = append(scopes, b.Prefix)
			case 1:
				b := old[rng.IntN(len(old))]
				delete(cur, b.Prefix)
				scopes = append(scopes, b.Prefix)
			default:
				b := old[rng.IntN(len(old))]
				b.Detector = "pregreet"
				cur[b.Prefix] = b
				scopes = append(scopes, b.Prefix)
			}
		}
		var next []ban.Ban
		for _, b := range cur {
			next = append(next, b)
		}
		whole := func(bans []ban.Ban) map[string]record {
			m := map[string]record{}
			for _, r := range renderRegion(bans, regionBits) {
				m[r.name] = r
			}
			return m
		}
		sb, sa := map[string]record{}, map[string]record{}
		renderScoped(sb, old, regionBits, scopes)
		renderScoped(sa, next, regionBits, scopes)
		want, got := diff(whole(old), whole(next)), diff(sb, sa)
		if fmt.Sprint(want) != fmt.Sprint(got) {
			t.Fatalf("round %d, changes %v:\nwhole region: %v\nscoped:       %v", round, scopes, want, got)
		}
	}
}
