package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestScrape(t *testing.T) {
	snap := func() Snapshot {
		return Snapshot{
			Lines:          42,
			EventsByKind:   map[string]uint64{"reject": 7},
			ParseSkipped:   map[string]uint64{"not_postfix": 3},
			Decisions:      map[string]uint64{"dictionary": 2},
			Bans:           map[string]uint64{"dictionary": 1},
			ActiveBans:     5,
			TailLagBytes:   map[string]int64{"/var/log/mail.log": 128},
			ActionFailures: map[string]uint64{"iptables": 1},
			ActionPending:  map[string]int{"iptables": 0},
			Guard:          &GuardSnapshot{BannedSessions: 4, Stress: true, StressEpisodes: 2},

			PersistPending:       3,
			PersistFailures:      9,
			PersistDropped:       1,
			DecisionsNotRecorded: 2,
			CheckpointHeldPaths:  1,
			FutureLines:          9,
		}
	}
	s, err := Listen("127.0.0.1:0", snap, nil)
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
		"mxguard_lines_read_total 42",
		`mxguard_events_total{kind="reject"} 7`,
		`mxguard_parse_skipped_total{reason="not_postfix"} 3`,
		`mxguard_decisions_total{detector="dictionary"} 2`,
		`mxguard_bans_total{detector="dictionary"} 1`,
		"mxguard_active_bans 5",
		`mxguard_tail_lag_bytes{path="/var/log/mail.log"} 128`,
		`mxguard_action_failures_total{action="iptables"} 1`,
		"mxguard_guard_banned_sessions_total 4",
		"mxguard_guard_stress 1",
		"mxguard_guard_stress_episodes_total 2",
		"mxguard_ban_persist_pending 3",
		"mxguard_ban_persist_failures_total 9",
		"mxguard_ban_persist_dropped_total 1",
		"mxguard_decisions_not_recorded_total 2",
		"mxguard_checkpoint_held_paths 1",
		"mxguard_future_lines_total 9",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

func TestListenBadAddr(t *testing.T) {
	if _, err := Listen("256.0.0.1:bad", func() Snapshot { return Snapshot{} }, nil); err == nil || !strings.HasPrefix(err.Error(), "metrics_listen:") {
		t.Errorf("got %v", err)
	}
}
