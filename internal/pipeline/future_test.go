package pipeline

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/logparse"
)

// decisionRecorder keeps every decision it is given.
type decisionRecorder struct {
	mu  sync.Mutex
	got []detectors.Decision
}

func (r *decisionRecorder) Decide(_ context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, d)
	return ban.Ban{}, true, nil
}

// isoDictLines returns n unknown-recipient rejects from ip, one second
// apart from start, with RFC 3339 stamps (which carry their year).
func isoDictLines(ip string, start time.Time, n int) []string {
	var out []string
	for i := range n {
		t := start.Add(time.Duration(i) * time.Second)
		out = append(out, fmt.Sprintf("%s mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <u%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<u%d@example.com> proto=ESMTP helo=<friend>",
			t.Format(time.RFC3339), ip, i, i))
	}
	return out
}

// Lines stamped more than FutureTolerance ahead of the clock are counted
// and dated now: their events still count as evidence, but they do not
// set the decision's time. Lines within the tolerance keep their stamp
// (the Manager dates a decision no later than its clock).
func TestFutureStampedLines(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		start      time.Time
		wantFuture uint64
		wantTime   time.Time // of the one decision
	}{
		{"stamped 2099", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), 5, now},
		{"beyond the tolerance", now.Add(FutureTolerance + time.Minute), 5, now},
		{"within the tolerance", now.Add(FutureTolerance - time.Minute), 0, now.Add(FutureTolerance - time.Minute + 4*time.Second)},
		{"in the past", now.Add(-time.Hour), 0, now.Add(-time.Hour + 4*time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			det, err := detectors.New(detectors.DefaultConfig(), nil)
			if err != nil {
				t.Fatal(err)
			}
			dec := &decisionRecorder{}
			p := New(det, dec, nil)
			p.SetClock(func() time.Time { return now })
			parser := logparse.NewParser(time.UTC, now)
			lines := isoDictLines("203.0.113.5", tt.start, 5)
			for _, l := range lines {
				stamp, ok := p.HandleLine(context.Background(), parser, l)
				if !ok {
					t.Fatalf("line not recognised: %s", l)
				}
				if stamp.Year() != tt.start.Year() {
					t.Errorf("HandleLine returned %v, want the line's own stamp", stamp)
				}
			}
			st := p.Stats()
			if st.FutureLines != tt.wantFuture {
				t.Errorf("future_lines = %d, want %d", st.FutureLines, tt.wantFuture)
			}
			if st.Events != uint64(len(lines)) {
				t.Errorf("events = %d, want %d: skewed lines still count as evidence", st.Events, len(lines))
			}
			if len(dec.got) != 1 {
				t.Fatalf("decisions = %+v, want one", dec.got)
			}
			if d := dec.got[0]; !d.Time.Equal(tt.wantTime) || d.Evidence != 5 {
				t.Errorf("decision at %v with evidence %d, want at %v with 5", d.Time, d.Evidence, tt.wantTime)
			}
		})
	}
}

// Replay's clock is the log itself: no line is ahead of it, and a log
// from any year replays as written.
func TestReplayHasNoFutureLines(t *testing.T) {
	start := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	p := writeLog(t, isoDictLines("203.0.113.5", start, 5))
	res, err := Replay(context.Background(), []string{p}, ReplayOptions{
		Detectors: detectors.DefaultConfig(), Ban: ban.DefaultConfig(), Loc: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.FutureLines != 0 {
		t.Errorf("replay counted %d future lines", res.Stats.FutureLines)
	}
	if len(res.Bans) != 1 || !res.Bans[0].Time.Equal(start.Add(4*time.Second)) {
		t.Errorf("bans = %+v, want one dated by the log", res.Bans)
	}
}
