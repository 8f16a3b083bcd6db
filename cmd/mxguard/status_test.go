package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/daemon"
	"github.com/mxguard/mxguard/internal/pipeline"
)

// status shows the restore of the active bans and the lines stamped in
// the future.
func TestWriteStatusRestoreAndFutureLines(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		restore daemon.RestoreStatus
		future  uint64
		want    []string
		wantNot []string
	}{
		{"running", daemon.RestoreStatus{State: daemon.RestoreRunning, Bans: 7500, Started: start}, 0,
			[]string{"restore: running (7500 bans)"}, []string{"future"}},
		{"done", daemon.RestoreStatus{State: daemon.RestoreDone, Bans: 7500, Started: start, Finished: start.Add(1500 * time.Millisecond)}, 3,
			[]string{"restore: done (7500 bans) in 1.5s", "future-stamped lines: 3"}, nil},
		{"failed", daemon.RestoreStatus{State: daemon.RestoreFailed, Bans: 2, Started: start, Finished: start.Add(time.Second), Error: "sync ipset: exit status 1"}, 0,
			[]string{"restore: failed (2 bans) in 1s: sync ipset: exit status 1 (retried in the background)"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			writeStatus(&b, daemon.Status{Started: start, Restore: tc.restore, Pipeline: pipeline.Stats{FutureLines: tc.future}})
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("status lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(b.String(), w) {
					t.Errorf("status has %q:\n%s", w, b.String())
				}
			}
		})
	}
}
