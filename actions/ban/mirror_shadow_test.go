package ban

import (
	"net/netip"
	"testing"
	"time"
)

// a local ban still in the persist queue (the store refuses
// writes) shadows a peer's mirror; when it expires, expireQueued removes
// and revokes the prefix without letting the mirror take over (Expire of
// a stored ban calls localGone, the queued path does not).
func TestQueuedLocalExpiryRestoresShadowedMirror(t *testing.T) {
	st := newFullStore()
	env := persistNew(t, st, ManagerConfig{})
	p := netip.MustParsePrefix("203.0.113.7/32")
	if _, err := env.m.Ban(ctxBG, p, time.Hour, "local"); err != nil {
		t.Fatal(err)
	}
	if o, _ := env.m.Mirror(ctxBG, p, "mx2", "peer", t0.Add(24*time.Hour), 0); o != MirrorShadowed {
		t.Fatalf("outcome %v, want shadowed", o)
	}
	later := t0.Add(2 * time.Hour)
	env.clock.Set(later)
	env.m.Expire(ctxBG, later) // the store still refuses: its error is expected
	if _, ok := env.m.Banned(p.Addr()); !ok {
		t.Errorf("the peer's mirror (until +24h) is not in force after the queued local ban expired")
	}
}

// a decision from an old log line (its ban already over) replaces
// a mirror in force in the index: the address is no longer Banned although
// the peer's ban runs for hours (until the next sweep or transfer).
func TestPastDecisionKeepsMirrorInForce(t *testing.T) {
	env := managerNew(t, ManagerConfig{}, &managerFake{name: "fw"})
	p := netip.MustParsePrefix("203.0.113.9/32")
	if o, _ := env.m.Mirror(ctxBG, p, "mx2", "peer", t0.Add(24*time.Hour), 0); o != MirrorAdded {
		t.Fatalf("outcome %v", o)
	}
	if _, _, err := env.m.Decide(ctxBG, managerDec("203.0.113.9", t0.Add(-30*24*time.Hour))); err != nil {
		t.Fatal(err)
	}
	if _, ok := env.m.Banned(p.Addr()); !ok {
		t.Errorf("an old, already-over local decision hid the peer's mirror in force")
	}
}
