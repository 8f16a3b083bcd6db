package ban

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// dryRunManagerWith is a dry-run Manager over a store that holds real.
func dryRunManagerWith(t *testing.T, real string, since time.Time, d time.Duration) *Manager {
	t.Helper()
	st := openStore(t, "")
	if err := st.Put(rec(real, since, d)); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(ManagerConfig{DryRun: true, Now: func() time.Time { return t0 },
		AllowSources: []func() ([]netip.Prefix, error){}}, st, []Action{&managerFake{name: "printer"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// A real ban in force when a dry run starts stays enforced when a dry-run
// decision "extends" it, and the would-be extension takes its place in the
// index once the real ban is over.
func TestManagerDryRunExtensionKeepsRealBanEnforced(t *testing.T) {
	m := dryRunManagerWith(t, "192.0.2.1/32", t0.Add(-30*time.Minute), time.Hour) // real, until t0+30m
	a := netip.MustParseAddr("192.0.2.1")
	if _, ok := m.LookupEnforced(a, t0); !ok {
		t.Fatal("real ban not enforced at start")
	}
	wouldBe, ok, err := m.Decide(context.Background(), managerDec("192.0.2.1", t0))
	if err != nil || !ok {
		t.Fatalf("Decide = %v %v", ok, err)
	}
	if !wouldBe.DryRun || !wouldBe.Until.After(t0.Add(30*time.Minute)) {
		t.Fatalf("Decide returned %+v, want a would-be extension past the real ban", wouldBe)
	}
	if b, ok := m.LookupEnforced(a, t0); !ok || b.DryRun {
		t.Errorf("LookupEnforced = %+v %v: the real ban (until t0+30m) is no longer enforced after a would-be extension", b, ok)
	}
	if _, ok := m.Banned(a); !ok {
		t.Error("Banned: the real ban is no longer enforced after a would-be extension")
	}
	ex, err := m.Explain(netip.MustParsePrefix("192.0.2.1/32"))
	if err != nil || ex.DryRun == nil || !ex.DryRun.Until.Equal(wouldBe.Until) {
		t.Errorf("Explain.DryRun = %+v (%v), want the would-be extension", ex.DryRun, err)
	}
	st, err := m.Status()
	if err != nil || st.ActiveBans != 1 || st.DryRunBans != 1 {
		t.Errorf("Status: %d real, %d dry-run bans (%v), want 1 and 1", st.ActiveBans, st.DryRunBans, err)
	}

	// after the real ban: the would-be ban is what the dry run shows,
	// and it is never enforced
	after := t0.Add(45 * time.Minute)
	if _, err := m.Expire(context.Background(), after); err != nil {
		t.Fatal(err)
	}
	if b, ok := m.Lookup(a, after); !ok || !b.DryRun || !b.Until.Equal(wouldBe.Until) {
		t.Errorf("Lookup after the real ban = %+v %v, want the would-be ban", b, ok)
	}
	if b, ok := m.LookupEnforced(a, after); ok {
		t.Errorf("LookupEnforced after the real ban = %+v, want nothing (a would-be ban is never enforced)", b)
	}
}

// A would-be /32 inside a real /24 does not hide the /24.
func TestManagerDryRunBanDoesNotHideRealBan(t *testing.T) {
	m := dryRunManagerWith(t, "192.0.2.0/24", t0.Add(-30*time.Minute), time.Hour)
	if _, _, err := m.Decide(context.Background(), managerDec("192.0.2.9", t0)); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("192.0.2.9")
	b, ok := m.LookupEnforced(a, t0)
	if !ok || b.Prefix.Bits() != 24 || b.DryRun {
		t.Errorf("LookupEnforced = %+v %v, want the real /24", b, ok)
	}
	if b, ok := m.Lookup(a, t0); !ok || b.Prefix.Bits() != 32 || !b.DryRun {
		t.Errorf("Lookup = %+v %v, want the would-be /32", b, ok)
	}
}
