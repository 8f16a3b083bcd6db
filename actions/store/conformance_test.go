package store

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// blockList is what the ban Manager uses of a store; both the bbolt Store
// and Memory must behave the same through it.
type blockList interface {
	Get(p netip.Prefix) (Record, bool, error)
	Put(r Record) error
	Delete(p netip.Prefix, now time.Time) (bool, error)
	Active(now time.Time) ([]Record, error)
	DeleteExpired(now time.Time) ([]Record, error)
	History(p netip.Prefix) (History, bool, error)
	Ledger(p netip.Prefix, limit int) ([]LedgerEntry, error)
	Prune(before time.Time, limit int) (ledger, history int, err error)
}

var (
	_ blockList = (*Store)(nil)
	_ blockList = (*Memory)(nil)
)

type blockListImpl struct {
	name string
	open func(t *testing.T) blockList
}

var blockListImpls = []blockListImpl{
	{"bbolt", func(t *testing.T) blockList { return openTest(t, "") }},
	{"memory", func(*testing.T) blockList { return NewMemory() }},
}

func mustPut(t *testing.T, s blockList, rs ...Record) {
	t.Helper()
	for _, r := range rs {
		if err := s.Put(r); err != nil {
			t.Fatalf("Put(%s): %v", r.Prefix, err)
		}
	}
}

func prefixes(rs []Record) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Prefix.String())
	}
	return strings.Join(out, ",")
}

func ledgerEvents(t *testing.T, s blockList, p string) string {
	t.Helper()
	es, err := s.Ledger(netip.MustParsePrefix(p), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s@%s", e.Event, e.At.Sub(t0)))
	}
	return strings.Join(out, ",")
}

func sameRecord(a, b Record) bool {
	return a.Prefix == b.Prefix && a.Detector == b.Detector && a.Reason == b.Reason &&
		a.Evidence == b.Evidence && a.FirstSeen.Equal(b.FirstSeen) && a.LastSeen.Equal(b.LastSeen) &&
		a.Since.Equal(b.Since) && a.Until.Equal(b.Until) && a.Offence == b.Offence
}

// TestBlockListConformance runs every case against both implementations.
func TestBlockListConformance(t *testing.T) {
	p1 := netip.MustParsePrefix("192.0.2.1/32")
	tests := []struct {
		name string
		run  func(t *testing.T, s blockList, impl blockListImpl)
	}{
		{"put then get keeps the last MaxLines lines", func(t *testing.T, s blockList, _ blockListImpl) {
			r := rec("192.0.2.1/32", t0, time.Hour)
			r.Lines = []string{"1", "2", "3", "4", "5", "6", "7"}
			mustPut(t, s, r)
			got, ok, err := s.Get(p1)
			if err != nil || !ok || !sameRecord(got, r) || strings.Join(got.Lines, "") != "34567" {
				t.Errorf("Get = %+v %v %v", got, ok, err)
			}
			if _, ok, _ := s.Get(netip.MustParsePrefix("192.0.2.10/32")); ok {
				t.Error("Get found a prefix never stored")
			}
		}},
		{"bans past 2262 keep one order", func(t *testing.T, s blockList, _ blockListImpl) {
			// Unix nanoseconds end in 2262: both stores order later bans by prefix
			far := rec("192.0.2.9/32", t0, 0)
			far.Until = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
			farther := rec("192.0.2.1/32", t0, 0)
			farther.Until = time.Date(2318, 1, 1, 0, 0, 0, 0, time.UTC)
			near := rec("192.0.2.5/32", t0, time.Hour)
			mustPut(t, s, far, farther, near)
			if a, err := s.Active(t0); err != nil || prefixes(a) != "192.0.2.5/32,192.0.2.1/32,192.0.2.9/32" {
				t.Errorf("Active = %s %v", prefixes(a), err)
			}
		}},
		{"same since and offence is an extension", func(t *testing.T, s blockList, _ blockListImpl) {
			r := rec("192.0.2.1/32", t0, time.Hour)
			mustPut(t, s, r)
			r.Until, r.Evidence, r.LastSeen = t0.Add(3*time.Hour), 9, t0.Add(time.Hour)
			mustPut(t, s, r)
			h, ok, _ := s.History(p1)
			if !ok || h.Offences != 1 || len(h.Times) != 1 {
				t.Errorf("history after extension = %+v", h)
			}
			if got := ledgerEvents(t, s, "192.0.2.1/32"); got != "extend@0s,ban@0s" {
				t.Errorf("ledger = %s", got)
			}
			// The expiry moved with the record.
			if a, _ := s.Active(t0.Add(2 * time.Hour)); prefixes(a) != "192.0.2.1/32" || a[0].Evidence != 9 {
				t.Errorf("Active after extension = %+v", a)
			}
			if x, _ := s.DeleteExpired(t0.Add(2 * time.Hour)); len(x) != 0 {
				t.Errorf("the old expiry still swept: %+v", x)
			}
		}},
		{"new since or new offence is a new offence", func(t *testing.T, s blockList, _ blockListImpl) {
			r := rec("192.0.2.1/32", t0, time.Hour)
			mustPut(t, s, r)
			r2 := rec("192.0.2.1/32", t0.Add(2*time.Hour), 2*time.Hour)
			r2.Offence = 2
			mustPut(t, s, r2)
			r3 := r2
			r3.Offence = 3 // same since, other offence: counted
			mustPut(t, s, r3)
			h, _, _ := s.History(p1)
			if h.Offences != 3 || !h.LastBan.Equal(t0.Add(2*time.Hour)) || len(h.Times) != 3 {
				t.Errorf("history = %+v", h)
			}
			if got := ledgerEvents(t, s, "192.0.2.1/32"); got != "ban@2h0m0s,ban@2h0m0s,ban@0s" {
				t.Errorf("ledger = %s", got)
			}
		}},
		{"history keeps the 64 most recent times, sorted", func(t *testing.T, s blockList, _ blockListImpl) {
			// 70 offences, stored out of time order.
			for i := range 70 {
				at := t0.Add(time.Duration((i*37)%70) * time.Hour)
				mustPut(t, s, rec("192.0.2.1/32", at, time.Minute))
			}
			h, _, _ := s.History(p1)
			if h.Offences != 70 || len(h.Times) != 64 || !h.LastBan.Equal(t0.Add(69*time.Hour)) {
				t.Fatalf("history: %d offences, %d times, last %v", h.Offences, len(h.Times), h.LastBan)
			}
			if !h.Times[0].Equal(t0.Add(6*time.Hour)) || !slices.IsSortedFunc(h.Times, time.Time.Compare) {
				t.Errorf("times not the sorted 64 most recent: first %v", h.Times[0])
			}
		}},
		{"active: in force only, in order of until, without lines", func(t *testing.T, s blockList, impl blockListImpl) {
			a := rec("2001:db8::/64", t0, 3*time.Hour)
			b := rec("192.0.2.1/32", t0, time.Hour)
			c := rec("192.0.2.2/32", t0, 2*time.Hour)
			d := rec("192.0.2.3/32", t0, 2*time.Hour)
			gone := rec("192.0.2.9/32", t0.Add(-time.Hour), time.Hour)
			for _, r := range []*Record{&a, &b, &c, &d, &gone} {
				r.Lines = []string{"evidence"}
			}
			mustPut(t, s, a, d, b, gone, c)
			act, err := s.Active(t0)
			if err != nil || prefixes(act) != "192.0.2.1/32,192.0.2.2/32,192.0.2.3/32,2001:db8::/64" {
				t.Fatalf("Active = %s %v", prefixes(act), err)
			}
			if !sameRecord(act[3], a) {
				t.Errorf("Active record = %+v, want %+v", act[3], a)
			}
			for _, r := range act {
				if len(r.Lines) != 0 { // only Get fills evidence lines
					t.Errorf("Active returned evidence lines for %s", r.Prefix)
				}
			}
			if act, _ := s.Active(t0.Add(time.Hour)); prefixes(act) != "192.0.2.2/32,192.0.2.3/32,2001:db8::/64" {
				t.Errorf("Active at the until of 192.0.2.1 = %s (until is exclusive)", prefixes(act))
			}
		}},
		{"delete keeps history and records unban", func(t *testing.T, s blockList, _ blockListImpl) {
			mustPut(t, s, rec("192.0.2.1/32", t0, time.Hour))
			if found, err := s.Delete(p1, t0.Add(time.Minute)); !found || err != nil {
				t.Fatalf("Delete = %v %v", found, err)
			}
			if found, err := s.Delete(p1, t0.Add(time.Minute)); found || err != nil {
				t.Errorf("second Delete = %v %v", found, err)
			}
			if _, ok, _ := s.Get(p1); ok {
				t.Error("deleted ban still stored")
			}
			if a, _ := s.Active(t0); len(a) != 0 {
				t.Errorf("deleted ban still active: %v", prefixes(a))
			}
			if h, ok, _ := s.History(p1); !ok || h.Offences != 1 {
				t.Errorf("history lost: %+v", h)
			}
			if got := ledgerEvents(t, s, "192.0.2.1/32"); got != "unban@1m0s,ban@0s" {
				t.Errorf("ledger = %s", got)
			}
		}},
		{"delete expired sweeps until <= now once", func(t *testing.T, s blockList, _ blockListImpl) {
			mustPut(t, s, rec("192.0.2.2/32", t0, 2*time.Hour), rec("192.0.2.1/32", t0, time.Hour),
				rec("192.0.2.3/32", t0, 3*time.Hour))
			now := t0.Add(2 * time.Hour)
			x, err := s.DeleteExpired(now)
			if err != nil || prefixes(x) != "192.0.2.1/32,192.0.2.2/32" || !sameRecord(x[0], rec("192.0.2.1/32", t0, time.Hour)) {
				t.Fatalf("DeleteExpired = %+v %v", x, err)
			}
			if x, _ := s.DeleteExpired(now); len(x) != 0 {
				t.Errorf("swept twice: %s", prefixes(x))
			}
			if a, _ := s.Active(t0); prefixes(a) != "192.0.2.3/32" {
				t.Errorf("Active after sweep = %s", prefixes(a))
			}
			if got := ledgerEvents(t, s, "192.0.2.1/32"); got != "expire@2h0m0s,ban@0s" {
				t.Errorf("ledger = %s", got)
			}
			if h, ok, _ := s.History(p1); !ok || h.Offences != 1 {
				t.Errorf("history lost at expiry: %+v", h)
			}
		}},
		{"ledger: newest first, exact prefix, limit", func(t *testing.T, s blockList, _ blockListImpl) {
			r := rec("192.0.2.1/32", t0, time.Hour)
			mustPut(t, s, r, rec("192.0.2.10/32", t0, time.Hour))
			r.Until = t0.Add(2 * time.Hour)
			mustPut(t, s, r)
			es, err := s.Ledger(p1, 1)
			if err != nil || len(es) != 1 || es[0].Event != "extend" || !es[0].Record.Until.Equal(r.Until) {
				t.Errorf("Ledger(limit 1) = %+v %v", es, err)
			}
			if got := ledgerEvents(t, s, "192.0.2.1/32"); got != "extend@0s,ban@0s" {
				t.Errorf("ledger = %s", got)
			}
			all, _ := s.Ledger(p1, 0)
			if len(all) != 2 || all[0].Seq <= all[1].Seq {
				t.Errorf("sequence numbers not increasing: %+v", all)
			}
		}},
		{"prune: old ledger entries, old histories without a ban", func(t *testing.T, s blockList, _ blockListImpl) {
			mustPut(t, s, rec("192.0.2.1/32", t0, time.Hour), rec("192.0.2.2/32", t0.Add(time.Hour), time.Hour),
				rec("192.0.2.3/32", t0.Add(2*time.Hour), 10*time.Hour), rec("192.0.2.4/32", t0.Add(5*time.Hour), time.Hour))
			if _, err := s.DeleteExpired(t0.Add(4 * time.Hour)); err != nil {
				t.Fatal(err)
			}
			// Before 3h: ledger bans at 0h, 1h, 2h; histories of .1 and .2
			// (.3 is still banned). The limit of 2 applies to each.
			l, h, err := s.Prune(t0.Add(3*time.Hour), 2)
			if err != nil || l != 2 || h != 2 {
				t.Fatalf("Prune = %d %d %v", l, h, err)
			}
			l, h, _ = s.Prune(t0.Add(3*time.Hour), 2)
			if l != 1 || h != 0 {
				t.Errorf("second Prune = %d %d", l, h)
			}
			for p, want := range map[string]bool{"192.0.2.1/32": false, "192.0.2.2/32": false,
				"192.0.2.3/32": true, "192.0.2.4/32": true} {
				if _, ok, _ := s.History(netip.MustParsePrefix(p)); ok != want {
					t.Errorf("history of %s kept = %v, want %v", p, ok, want)
				}
			}
			// The expiries (at 4h) stop the ledger walk: in time order.
			if got := ledgerEvents(t, s, "192.0.2.1/32"); got != "expire@4h0m0s" {
				t.Errorf("ledger of 192.0.2.1 = %s", got)
			}
		}},
		{"invalid prefix refused", func(t *testing.T, s blockList, _ blockListImpl) {
			if err := s.Put(Record{Until: t0}); err == nil {
				t.Error("Put accepted an invalid prefix")
			}
		}},
	}
	for _, impl := range blockListImpls {
		for _, tt := range tests {
			t.Run(impl.name+"/"+tt.name, func(t *testing.T) {
				tt.run(t, impl.open(t), impl)
			})
		}
	}
}
