package ban

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/detectors"
)

// OnBan sees every ban put in force - new, extended, manual - and
// nothing that did not ban, nor a ban already over; cancel stops it.
func TestOnBan(t *testing.T) {
	env := managerNew(t, ManagerConfig{Allowlist: []string{"198.51.100.0/24"}})
	m := env.m
	var mu sync.Mutex
	var got []Ban
	cancel := m.OnBan(func(b Ban) {
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
	})
	seen := func() []Ban {
		mu.Lock()
		defer mu.Unlock()
		return append([]Ban(nil), got...)
	}
	ctx := context.Background()
	p := netip.MustParsePrefix("203.0.113.7/32")
	wide := netip.MustParsePrefix("203.0.113.0/24")
	for _, tc := range []struct {
		name string
		do   func() error
		want []netip.Prefix // new notifications
	}{
		{"new ban", func() error {
			_, _, err := m.Decide(ctx, detectors.Decision{Prefix: p, Detector: "dictionary", Reason: "5 unknown", Time: t0})
			return err
		}, []netip.Prefix{p}},
		{"extension", func() error {
			_, _, err := m.Decide(ctx, detectors.Decision{Prefix: p, Detector: "dictionary", Reason: "again", Time: t0.Add(time.Minute)})
			return err
		}, []netip.Prefix{p}},
		{"manual prefix", func() error {
			_, err := m.Ban(ctx, wide, time.Hour, "by hand")
			return err
		}, []netip.Prefix{wide}},
		{"warn only", func() error {
			_, _, err := m.Decide(ctx, detectors.Decision{Prefix: netip.MustParsePrefix("192.0.2.9/32"), Detector: "x", Warn: true, Time: t0})
			return err
		}, nil},
		{"allowlisted", func() error {
			_, _, err := m.Decide(ctx, detectors.Decision{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Detector: "x", Time: t0})
			return err
		}, nil},
		{"over already", func() error {
			_, _, err := m.Decide(ctx, detectors.Decision{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Detector: "x", Time: t0.Add(-1000 * time.Hour)})
			return err
		}, nil},
	} {
		before := len(seen())
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var added []netip.Prefix
		for _, b := range seen()[before:] {
			added = append(added, b.Prefix)
			if !b.Active(t0) {
				t.Errorf("%s: notified of a ban not in force: %+v", tc.name, b)
			}
		}
		if len(added) != len(tc.want) || len(added) > 0 && added[0] != tc.want[0] {
			t.Errorf("%s: notified %v, want %v", tc.name, added, tc.want)
		}
	}
	cancel()
	n := len(seen())
	if _, err := m.Ban(ctx, netip.MustParsePrefix("192.0.2.11/32"), time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	if len(seen()) != n {
		t.Error("notified after cancel")
	}
}
