package pipeline

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/logparse"
)

// A line stamped 2099 read again by the warm-up is dated now, as Follow
// dates it: it must not pin the detectors' clock in 2099, where the client
// it names would never go idle and, first in line, would keep every client
// behind it from expiring.
func TestWarmDatesFutureLines(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, forged := range []bool{false, true} {
		det, err := detectors.New(detectors.DefaultConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		p := New(det, &decisionRecorder{}, nil)
		clock := t0
		p.SetClock(func() time.Time { return clock })
		lines := isoDictLines("198.51.100.7", t0.Add(-10*time.Minute), 1)
		if forged {
			lines = append(lines, isoDictLines("198.51.100.8", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), 1)...)
		}
		if err := p.Warm(context.Background(), &fakeLookback{lines: lines}, time.UTC); err != nil {
			t.Fatal(err)
		}
		if forged && p.Stats().FutureLines != 1 {
			t.Errorf("future lines in the warm-up counted %d, want 1", p.Stats().FutureLines)
		}
		// Live lines, in time order, over a day: 50 clients, one every 30
		// minutes, each seen once.
		parser := logparse.NewParser(time.UTC, time.Time{})
		for i := range 50 {
			clock = t0.Add(time.Duration(i) * 30 * time.Minute)
			p.HandleLine(context.Background(), parser, isoDictLines(fmt.Sprintf("203.0.113.%d", i+1), clock, 1)[0])
		}
		if got := p.Stats().Clients; got > 10 {
			t.Errorf("forged=%v: %d clients still tracked after a day of one line each, want the recent few", forged, got)
		}
	}
}
