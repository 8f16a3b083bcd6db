package ban

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// A decision's log time never pushes a ban beyond the Manager's clock plus
// the ban's duration: a line stamped 2099 bans for ban.max at most, from
// now, whatever it says.
func TestManagerCapsBanTimesAtClock(t *testing.T) {
	far := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	maxBan := 168 * time.Hour
	tests := []struct {
		name      string
		prior     time.Time     // a detector ban decided first at this log time (zero: none)
		at        time.Time     // log time of the decision
		manual    time.Duration // > 0: a manual ban for this long instead of a decision
		wantSince time.Time
		wantUntil time.Time
	}{
		{name: "stamped 2099", at: far, wantSince: t0, wantUntil: t0.Add(time.Hour)},
		{name: "a minute ahead", at: t0.Add(time.Minute), wantSince: t0, wantUntil: t0.Add(time.Hour)},
		{name: "in the past: log time kept", at: t0.Add(-10 * time.Minute),
			wantSince: t0.Add(-10 * time.Minute), wantUntil: t0.Add(50 * time.Minute)},
		{name: "extension stamped 2099", prior: t0.Add(-30 * time.Minute), at: far,
			wantSince: t0.Add(-30 * time.Minute), wantUntil: t0.Add(time.Hour)},
		{name: "manual ban longer than ban.max keeps its duration", manual: 30 * 24 * time.Hour,
			wantSince: t0, wantUntil: t0.Add(30 * 24 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &managerFake{name: "fake"}
			env := managerNew(t, ManagerConfig{}, f)
			ctx := context.Background()
			ip := "192.0.2.7"
			if !tt.prior.IsZero() {
				if _, ok, err := env.m.Decide(ctx, managerDec(ip, tt.prior)); !ok || err != nil {
					t.Fatalf("prior decision: %v %v", ok, err)
				}
			}
			var b Ban
			var err error
			if tt.manual > 0 {
				b, err = env.m.Ban(ctx, netip.MustParsePrefix(ip+"/32"), tt.manual, "")
			} else {
				var ok bool
				b, ok, err = env.m.Decide(ctx, managerDec(ip, tt.at))
				if !ok {
					t.Fatalf("Decide refused: %v", err)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.manual == 0 && b.Until.After(t0.Add(maxBan)) {
				t.Errorf("until %v is beyond now + ban.max (%v)", b.Until, t0.Add(maxBan))
			}
			if !b.Since.Equal(tt.wantSince) || !b.Until.Equal(tt.wantUntil) {
				t.Errorf("ban since %v until %v, want since %v until %v", b.Since, b.Until, tt.wantSince, tt.wantUntil)
			}
			r, ok, err := env.store.Get(b.Prefix)
			if err != nil || !ok {
				t.Fatalf("stored record: %v %v", ok, err)
			}
			if r.LastSeen.After(t0) || r.FirstSeen.After(t0) || !r.Until.Equal(tt.wantUntil) {
				t.Errorf("stored record carries the future: first %v last %v until %v", r.FirstSeen, r.LastSeen, r.Until)
			}
			// The offence history must not be dated in the future either:
			// it would count against the address for decades.
			h, _, err := env.store.History(b.Prefix)
			if err != nil {
				t.Fatal(err)
			}
			for _, at := range h.Times {
				if at.After(t0) {
					t.Errorf("offence recorded at %v, after the clock", at)
				}
			}
		})
	}
}
