package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestScrapePeers(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	s, err := Listen("127.0.0.1:0", func() Snapshot {
		return Snapshot{Peers: []PeerSnapshot{{Name: "mx2", Serial: 42, Entries: 1200,
			Skipped: map[string]int{"test": 1, "allowlist": 3}, Failures: 2, LastTransfer: at},
			{Name: "mx3"}}}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for _, want := range []string{
		`mxguard_peer_zone_serial{peer="mx2"} 42`,
		`mxguard_peer_mirrored_bans{peer="mx2"} 1200`,
		`mxguard_peer_skipped_names{peer="mx2",reason="allowlist"} 3`,
		`mxguard_peer_skipped_names{peer="mx2",reason="test"} 1`,
		`mxguard_peer_check_failures_total{peer="mx2"} 2`,
		`mxguard_peer_last_transfer_timestamp_seconds{peer="mx2"} 1.8e+09`,
		`mxguard_peer_zone_serial{peer="mx3"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(body, `mxguard_peer_last_transfer_timestamp_seconds{peer="mx3"}`) {
		t.Error("a peer never transferred has a last transfer time")
	}
}
