package pipeline

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/tailer"
	"github.com/mxguard/mxguard/logparse"
)

// fakeLookback hands out lines as tailer.Follower.Lookback does: going
// back from the last one until older says stop, then oldest first, the
// last one with the checkpoint's Partial.
type fakeLookback struct {
	lines   []string
	partial int
	asked   int
}

func (f *fakeLookback) Lookback(ctx context.Context, older func(path, line string) bool, fn func(tailer.Line)) error {
	first := 0
	for i := len(f.lines) - 1; i >= 0; i-- {
		f.asked++
		if older("mail.log", f.lines[i]) {
			first = i + 1
			break
		}
	}
	for i := first; i < len(f.lines); i++ {
		l := tailer.Line{Text: f.lines[i], Path: "mail.log", Pos: tailer.Position{Offset: int64(i + 1)}}
		if i == len(f.lines)-1 {
			l.Pos.Partial = f.partial
		}
		fn(l)
	}
	return nil
}

// recordingDecider records the decisions it is asked to take, with the
// line DecisionLine gives for each.
type recordingDecider struct {
	mu    sync.Mutex
	taken []string // detector@line offset/partial
}

func (r *recordingDecider) Decide(ctx context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := DecisionLine(ctx)
	r.taken = append(r.taken, fmt.Sprintf("%s %s@%d/%d(%v)", d.Prefix.Addr(), d.Detector, l.Pos.Offset, l.Pos.Partial, ok))
	return ban.Ban{}, true, nil
}

func pipeliningLineAt(ip string, t time.Time) string {
	return fmt.Sprintf("%s mx1 postfix/smtpd[8966]: improper command pipelining after HELO from unknown[%s]: MAIL FROM:<a@b.example>\\r\\nRCPT TO:<u@example.com>\\r\\n",
		t.Format(time.Stamp), ip)
}

// Warm gives the detectors their windows back without taking the
// decisions of the lines before the checkpoint again, except the ones of
// the checkpoint's own line that a crash cut short.
func TestWarm(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	start := now.Add(-5 * time.Minute)
	// Lines before the checkpoint: a line 13h old (more than twice the
	// longest window, sasl_bruteforce's 6h long one: not read again); 203.0.113.1 banned for 5 unknown
	// recipients; 3 of 5 from 203.0.113.2; and the checkpoint's line, a
	// pipelining one from 203.0.113.1 that is also its sixth error: two
	// decisions, pipelining then error_burst.
	var before []string
	before = append(before, dictLines("203.0.113.2", now.Add(-13*time.Hour), 1)...)
	before = append(before, dictLines("203.0.113.1", start, 5)...)
	before = append(before, dictLines("203.0.113.2", start, 3)...)
	before = append(before, pipeliningLineAt("203.0.113.1", start.Add(time.Minute)))
	const n = 9 // lines read again: all but the old one

	tests := []struct {
		partial int
		resumed []string
	}{
		{0, nil}, // the checkpoint's line was processed in full
		{1, []string{fmt.Sprintf("203.0.113.1 error_burst@%d/2(true)", n+1)}},
		{2, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("partial=%d", tc.partial), func(t *testing.T) {
			det, err := detectors.New(detectors.DefaultConfig(), nil)
			if err != nil {
				t.Fatal(err)
			}
			dec := &recordingDecider{}
			p := New(det, dec, nil)
			src := &fakeLookback{lines: before, partial: tc.partial}
			if err := p.Warm(context.Background(), src, time.UTC); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(dec.taken) != fmt.Sprint(tc.resumed) {
				t.Errorf("decisions taken while warming up: %q, want %q", dec.taken, tc.resumed)
			}
			st := p.Stats()
			if st.Warm.Lines != n || st.Warm.Decisions != uint64(3-len(tc.resumed)) || st.Warm.Resumed != uint64(len(tc.resumed)) {
				t.Errorf("warm stats = %+v, want %d lines, %d decisions not taken again", st.Warm, n, 3-len(tc.resumed))
			}
			if st.Lines != 0 || st.Events != 0 {
				t.Errorf("lines read again counted as new: %d lines, %d events", st.Lines, st.Events)
			}
			if src.asked != n+1 {
				t.Errorf("older asked about %d lines, want %d (up to the first one older than 2h)", src.asked, n+1)
			}

			// After the checkpoint: two more unknown recipients make five
			// for 203.0.113.2; 203.0.113.1 stays muted.
			dec.taken = nil
			parser := logparse.NewParser(time.UTC, time.Time{})
			live := dictLines("203.0.113.2", start.Add(2*time.Minute), 5)[3:] // u3 and u4
			live = append(live, pipeliningLineAt("203.0.113.1", start.Add(3*time.Minute)))
			for _, l := range live {
				p.HandleLine(context.Background(), parser, l)
			}
			if want := "[203.0.113.2 dictionary@0/0(false)]"; fmt.Sprint(dec.taken) != want {
				t.Errorf("decisions after the checkpoint: %q, want %q", dec.taken, want)
			}
		})
	}
}
