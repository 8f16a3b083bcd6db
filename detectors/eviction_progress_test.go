package detectors

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// When the table is full, the client dropped is the one furthest from a
// decision now: entries that have left their window count for nothing,
// and a window with a long one too is measured against each bar on its
// own, and a score counts as decayed to now.
func TestEvictionMeasuresLiveWindows(t *testing.T) {
	const ipB, ipC = "192.0.2.2", "192.0.2.3"
	h, m, s := time.Hour, time.Minute, time.Second
	relay := func(at time.Duration, ip string) event.Event {
		return ev(at, ip, event.KindReject, reason(event.ReasonRelayDenied), stage("RCPT"))
	}
	for _, tc := range []struct {
		name   string
		events []event.Event // A's and B's; then C arrives at the end
		at     time.Duration // C's time
	}{
		{
			// A: 4 of sasl_bruteforce's 8 within 6h, none within 10m;
			// B: 3 of 5 within 10m.
			name: "short window fuller than a stale long one",
			events: cat(
				every(4, 0, s, func(_ int, at time.Duration) event.Event { return ev(at, ipA, event.KindSASLFail) }),
				every(3, 2*h, s, func(_ int, at time.Duration) event.Event { return ev(at, ipB, event.KindSASLFail) })),
			at: 2*h + 3*s,
		},
		{
			// A: 7 of flood's 8 five minutes ago (gone from its 1m
			// window) and 1 of relay_probe's 3; B: 2 of relay_probe's 3.
			name: "entries past their window",
			events: cat(
				every(7, 0, s, func(_ int, at time.Duration) event.Event {
					return ev(at, ipA, event.KindLostConnection, stage("EHLO"))
				}),
				one(relay(5*m, ipA), relay(5*m, ipB), relay(5*m+s, ipB))),
			at: 5*m + 2*s,
		},
		{
			// A: a score of 8 of 10 three half-lives ago (1 now); B: 2 of
			// relay_probe's 3.
			name: "a score that has decayed",
			events: cat(
				one(ev(0, ipA, event.KindReject, reason(event.ReasonSenderNonFQDN), stage("MAIL")),
					ev(s, ipA, event.KindReject, reason(event.ReasonSenderNonFQDN), stage("MAIL")),
					ev(2*s, ipA, event.KindReject, reason(event.ReasonSenderDomainNotFound), stage("MAIL")),
					relay(90*m, ipB), relay(90*m+s, ipB))),
			at: 90*m + 2*s,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxClients = 2
			e, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range tc.events {
				if ds := e.Observe(x); len(ds) != 0 {
					t.Fatalf("setup decided: %+v", ds)
				}
			}
			e.Observe(ev(tc.at, ipC, event.KindSASLFail))
			if _, ok := e.clients.m[netip.MustParsePrefix(ipB+"/32")]; !ok {
				t.Errorf("B, nearer to a decision, was dropped")
			}
			if _, ok := e.clients.m[netip.MustParsePrefix(ipA+"/32")]; ok {
				t.Errorf("A, further from a decision, was kept")
			}
		})
	}
}
