package daemon

import (
	"testing"

	"github.com/mxguard/mxguard/internal/policy"
)

// Every counter of policy.Stats reaches the scrape under its own label.
func TestPolicyMetricsMapsEveryCounter(t *testing.T) {
	m := policyMetrics(policy.Stats{Connections: 1, Active: 2, Refused: 3, Requests: 4, BadRequests: 5, Timeouts: 6,
		Errors: 7, Blocked: 8, Helo: 9, DNSBL: 10, FCrDNS: 11, Greylisted: 12, RateLimited: 13, BadClient: 14, Denied: 15})
	if m.Connections != 1 || m.Active != 2 || m.Requests != 4 {
		t.Errorf("connections %d active %d requests %d, want 1 2 4", m.Connections, m.Active, m.Requests)
	}
	for _, tc := range []struct {
		set  map[string]uint64
		name string
		want uint64
	}{
		{m.Closed, "refused", 3}, {m.Closed, "bad_request", 5}, {m.Closed, "timeout", 6}, {m.Closed, "error", 7},
		{m.Closed, "denied", 15},
		{m.Hits, "blocked", 8}, {m.Hits, "helo", 9}, {m.Hits, "dnsbl", 10}, {m.Hits, "fcrdns", 11},
		{m.Hits, "greylisted", 12}, {m.Hits, "rate_limited", 13}, {m.Hits, "bad_client", 14},
	} {
		if got, ok := tc.set[tc.name]; !ok || got != tc.want {
			t.Errorf("%s = %d (present %v), want %d", tc.name, got, ok, tc.want)
		}
	}
	if len(m.Closed) != 5 || len(m.Hits) != 7 {
		t.Errorf("closed %v, hits %v: unexpected labels", m.Closed, m.Hits)
	}
}
