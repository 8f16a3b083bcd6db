package detectors

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logparse"
)

// collidingAddrs returns n addresses whose candidate buckets in e's signs
// table are victim's (what an attacker who knew the hash could aim
// at a victim's slots), and how many slots those buckets have.
func collidingAddrs(e *Engine, victim netip.Addr, n int) ([]string, int) {
	vk := victim.As16()
	v1, v2 := e.recent.candidates(&vk)
	slots := 2 * signWays
	if v1 == v2 {
		slots = signWays
	}
	var out []string
	for i := 1; len(out) < n; i++ {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8::%x:%x", i>>16, i&0xffff))
		k := a.As16()
		if b1, b2 := e.recent.candidates(&k); (b1 == v1 && b2 == v2) || (b1 == v2 && b2 == v1) {
			out = append(out, a.String())
		}
	}
	return out, slots
}

// Accepted mail from addresses that share the victim's buckets does not
// take its login forgiveness away (its submission rejects behind an
// office NAT are then no admin_reject evidence), not even when every
// other slot holds a live login, and another address's login never
// forgives the victim.
func TestCollidingAddressCannotWipeALogin(t *testing.T) {
	const victim = "203.0.113.50"
	all := -1 // every slot of the victim's buckets but its own
	for _, tc := range []struct {
		name        string
		victimLogin bool
		logins      int // colliding addresses that log in
		mail        int // colliding addresses that send accepted mail
		want        int
	}{
		{name: "control: logged in", victimLogin: true},
		{name: "control: not logged in", want: 1},
		{name: "accepted mail from more colliding addresses than the buckets hold", victimLogin: true, mail: 3 * signWays},
		{name: "buckets full of logins, then accepted mail", victimLogin: true, logins: all, mail: 3 * signWays},
		{name: "colliding addresses logged in, the victim did not", logins: 3 * signWays, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxClients = 64 // few buckets: colliding addresses are quick to find
			e, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			colliders, slots := collidingAddrs(e, netip.MustParseAddr(victim), 6*signWays)
			logins := tc.logins
			if logins == all {
				logins = slots - 1
			}
			p := logparse.NewParser(time.UTC, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
			var lines []string
			if tc.victimLogin {
				lines = login(0, 800, 1, victim, "alice@example.com")
			}
			for i, a := range colliders[:logins] {
				lines = append(lines, login(1, 900+i, 2+i, a, "bob@example.com")...)
			}
			for i, a := range colliders[logins : logins+tc.mail] {
				lines = append(lines, received(5, 1000+i, 100+i, "smtpd", a)...)
			}
			for i := range 3 {
				lines = append(lines, clientReject(10+10*i, i, "submission/smtpd", victim,
					"554 5.7.1 <mx.sender.example["+victim+"]>: Client host rejected: Access denied")...)
			}
			var got []string
			for _, l := range lines {
				ev, err := p.Parse(l)
				if err != nil {
					continue
				}
				for _, d := range e.Observe(ev.Clone()) {
					got = append(got, d.Detector+" "+d.Prefix.String())
				}
			}
			if len(got) != tc.want {
				t.Errorf("decisions %v, want %d", got, tc.want)
			}
		})
	}
}

// The table holds a sign for every one of max_clients addresses at once,
// and a login pushes out only signs that are not live logins.
func TestSignsTableCapacity(t *testing.T) {
	const n = 4096
	spans := signSpans{login: int64(time.Hour), accepted: int64(2 * time.Minute), mismatch: int64(2 * time.Hour)}
	g := newRecentGood(n, spans)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	const now = int64(time.Hour)
	kept := 0
	for i := range n {
		g.slot(addr(i), now, true).login = now
	}
	for i := range n {
		if s := g.find(addr(i)); s != nil && s.login == now {
			kept++
		}
	}
	// two choices of eight slots, at most 80% full: overflow is rare
	if lost := n - kept; lost > n/1000 {
		t.Errorf("%d of %d logins lost with max_clients %d", lost, n, n)
	}
	for i := range n {
		if s := g.slot(addr(n+i), now, false); s != nil {
			s.accepted = now
		}
	}
	after := 0
	for i := range n {
		if s := g.find(addr(i)); s != nil && s.login == now {
			after++
		}
	}
	if after != kept {
		t.Errorf("accepted mail pushed out %d live logins", kept-after)
	}
}
