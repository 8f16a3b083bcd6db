package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/pipeline"
)

func TestWritePersistStatus(t *testing.T) {
	tests := []struct {
		name string
		ps   ban.PersistStatus
		p    pipeline.Stats
		want []string // lines that must be there; nil: nothing printed
	}{
		{name: "healthy"},
		{
			name: "store full",
			ps: ban.PersistStatus{Pending: 198, Failures: 230, LastError: "put: no space left on device",
				LastErrorAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
			want: []string{"block list writes: 198 bans in force waiting for the store, 0 written late, 230 failures, 0 dropped",
				"no space left on device"},
		},
		{
			name: "queue full, checkpoint held",
			ps:   ban.PersistStatus{Pending: 100000, Failures: 1, Dropped: 4},
			p:    pipeline.Stats{NotRecorded: 4, AwaitingRedecision: 3, HeldPaths: 1},
			want: []string{"4 dropped", "decisions not recorded: 4; awaiting a new decision: 3; logs with their checkpoint held: 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			writePersistStatus(&b, tt.ps, tt.p)
			if tt.want == nil && b.Len() > 0 {
				t.Errorf("printed %q for a healthy store", b.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output %q lacks %q", b.String(), w)
				}
			}
		})
	}
}
