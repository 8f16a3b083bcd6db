package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, snap Snapshot) string {
	t.Helper()
	s, err := Listen("127.0.0.1:0", func() Snapshot { return snap }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestScrapePolicyAndDNSBL(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	body := scrape(t, Snapshot{
		Policy: &PolicySnapshot{Connections: 12, Active: 3, Requests: 340,
			Closed: map[string]uint64{"refused": 1, "denied": 2, "bad_request": 4, "timeout": 5, "error": 0},
			Hits:   map[string]uint64{"blocked": 7, "greylisted": 9}},
		DNSBL: &DNSBLSnapshot{Serial: 2026120101, Listings: 1500, Answers: map[string]uint64{"NOERROR": 80, "NXDOMAIN": 900},
			RateLimited: 6, Transfers: map[string]uint64{"axfr": 2, "ixfr": 30}, TransfersRefused: 4, TransfersFailed: 1,
			NotifySent: 31, NotifyFailed: 3, LastTransfer: map[string]time.Time{"192.0.2.53": at}},
	})
	for _, want := range []string{
		`mxguard_policy_connections_total 12`,
		`mxguard_policy_connections_active 3`,
		`mxguard_policy_connections_closed_total{reason="denied"} 2`,
		`mxguard_policy_connections_closed_total{reason="error"} 0`,
		`mxguard_policy_connections_closed_total{reason="timeout"} 5`,
		`mxguard_policy_requests_total 340`,
		`mxguard_policy_hits_total{check="blocked"} 7`,
		`mxguard_policy_hits_total{check="greylisted"} 9`,
		`mxguard_dnsbl_zone_serial 2.026120101e+09`,
		`mxguard_dnsbl_listings 1500`,
		`mxguard_dnsbl_answers_total{rcode="NXDOMAIN"} 900`,
		`mxguard_dnsbl_answers_total{rcode="NOERROR"} 80`,
		`mxguard_dnsbl_rate_limited_total 6`,
		`mxguard_dnsbl_transfers_total{kind="axfr"} 2`,
		`mxguard_dnsbl_transfers_total{kind="ixfr"} 30`,
		`mxguard_dnsbl_transfers_refused_total 4`,
		`mxguard_dnsbl_transfers_failed_total 1`,
		`mxguard_dnsbl_notifies_total{result="sent"} 31`,
		`mxguard_dnsbl_notifies_total{result="failed"} 3`,
		`mxguard_dnsbl_secondary_last_transfer_timestamp_seconds{secondary="192.0.2.53"} 1.8e+09`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

// Without the policy service or the publisher their series are absent, not
// zero (a zero would read as "running, idle").
func TestScrapeWithoutPolicyOrDNSBL(t *testing.T) {
	body := scrape(t, Snapshot{})
	for _, prefix := range []string{"mxguard_policy_", "mxguard_dnsbl_"} {
		if strings.Contains(body, "\n"+prefix) {
			t.Errorf("scrape without the service has %s series", prefix)
		}
	}
}
