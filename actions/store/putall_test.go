package store

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// PutAll leaves the store as Put one by one does: records, offence
// history (a new offence and an extension of it) and ledger.
func TestStorePutAllIsPutInOrder(t *testing.T) {
	first := rec("192.0.2.1/32", t0, time.Hour)
	extended := first
	extended.Until, extended.Evidence = t0.Add(2*time.Hour), 6
	second := rec("192.0.2.1/32", t0.Add(3*time.Hour), 2*time.Hour)
	second.Offence = 2
	other := rec("2001:db8::/64", t0, time.Hour)
	other.Lines = []string{"1", "2", "3", "4", "5", "6", "7"}
	rs := []Record{first, extended, second, other}

	one, all := openTest(t, ""), openTest(t, "")
	for _, r := range rs {
		if err := one.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := all.PutAll(slices.Clone(rs)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{first.Prefix, other.Prefix} {
		a, _, _ := one.Get(p)
		b, _, _ := all.Get(p)
		if !recordsEqual(a, b) {
			t.Errorf("%s: Put %+v, PutAll %+v", p, a, b)
		}
		ha, _, _ := one.History(p)
		hb, _, _ := all.History(p)
		if ha.Offences != hb.Offences || !slices.EqualFunc(ha.Times, hb.Times, time.Time.Equal) {
			t.Errorf("%s history: Put %+v, PutAll %+v", p, ha, hb)
		}
		la, _ := one.Ledger(p, 0)
		lb, _ := all.Ledger(p, 0)
		if len(la) != len(lb) {
			t.Errorf("%s ledger: Put %d entries, PutAll %d", p, len(la), len(lb))
		}
	}
	if h, _, _ := all.History(first.Prefix); h.Offences != 2 {
		t.Errorf("offences %d, want 2 (an extension is not one)", h.Offences)
	}
	if err := all.PutAll([]Record{rec("192.0.2.9/32", t0, time.Hour), {}}); err == nil {
		t.Error("PutAll with an invalid prefix succeeded")
	}
	if _, ok, _ := all.Get(netip.MustParsePrefix("192.0.2.9/32")); ok {
		t.Error("a failed PutAll wrote part of its records")
	}
}

func recordsEqual(a, b Record) bool {
	return a.Prefix == b.Prefix && a.Evidence == b.Evidence && a.Offence == b.Offence &&
		a.Since.Equal(b.Since) && a.Until.Equal(b.Until) && slices.Equal(a.Lines, b.Lines)
}
