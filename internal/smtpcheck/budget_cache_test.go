package smtpcheck

import (
	"context"
	"testing"
	"time"
)

// A lookup made with a request budget that other lookups already used up
// fails without asking the DNS server, and that failure is not remembered:
// a dead DNSBL zone that eats one request's budget must not turn off FCrDNS
// for every client for 30 s.
func TestExhaustedBudgetIsNotADNSFailure(t *testing.T) {
	z := newTestDNS(t, map[string]string{"ok.example": "192.0.2.1"}, nil, nil)
	r := NewResolver(z.addr, time.Second, 5*time.Minute)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	_, err := r.LookupIP(ctx, "ok.example", false)
	cancel()
	if err == nil {
		t.Fatal("a lookup with an expired budget succeeded")
	}
	if n := z.asked("ok.example"); n != 0 {
		t.Errorf("a lookup with an expired budget asked the server %d times", n)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := r.LookupIP(ctx, "ok.example", false); err != nil {
		t.Errorf("healthy name fails after an earlier request ran out of budget: %v (asked the server %d times)", err, z.asked("ok.example"))
	}
}

// A timeout is remembered only when the lookup started with at least half
// of the client timeout: one that began on the last crumbs of a request's
// budget says nothing about the server.
func TestTimeoutCachedOnlyWithFairBudget(t *testing.T) {
	const clientTimeout = 200 * time.Millisecond
	tests := []struct {
		name      string
		budget    time.Duration
		wantAsked int // after two lookups
	}{
		{"fair budget: timeout remembered", time.Second, 1},
		{"scraps of a budget: not remembered", 30 * time.Millisecond, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newTestDNS(t, nil, nil, []string{"silent.example"})
			r := NewResolver(z.addr, clientTimeout, 5*time.Minute)
			for range 2 {
				ctx, cancel := context.WithTimeout(context.Background(), tt.budget)
				_, err := r.LookupIP(ctx, "silent.example", false)
				cancel()
				if err == nil {
					t.Fatal("a silent server answered")
				}
			}
			if n := z.asked("silent.example"); n != tt.wantAsked {
				t.Errorf("server asked %d times, want %d", n, tt.wantAsked)
			}
		})
	}
}
