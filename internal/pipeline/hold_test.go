package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/tailer"
)

// listSource sends its lines once, then waits for ctx; it records acks.
type listSource struct {
	lines []tailer.Line

	mu    sync.Mutex
	acked map[string][]int64 // path → acknowledged offsets, in order
}

func (s *listSource) Run(ctx context.Context, out chan<- tailer.Line) error {
	for _, l := range s.lines {
		select {
		case out <- l:
		case <-ctx.Done():
			return nil
		}
	}
	<-ctx.Done()
	return nil
}

func (s *listSource) Ack(l tailer.Line) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acked[l.Path] = append(s.acked[l.Path], l.Pos.Offset)
}

// scriptDecider answers each call in turn from results ("ok", "lost" for
// a decision neither recorded nor queued, "invalid"); past the script: ok.
type scriptDecider struct {
	results []string

	mu    sync.Mutex
	calls []detectors.Decision
}

func (s *scriptDecider) Decide(_ context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := "ok"
	if n := len(s.calls); n < len(s.results) {
		r = s.results[n]
	}
	s.calls = append(s.calls, d)
	switch r {
	case "lost":
		return ban.Ban{}, false, fmt.Errorf("ban %s: %w: store: no space left on device", d.Prefix, ban.ErrNotRecorded)
	case "invalid":
		return ban.Ban{}, false, errors.New("decision from dictionary: prefix has a zone")
	}
	return ban.Ban{Prefix: d.Prefix, Evidence: d.Evidence}, true, nil
}

// unknownRcpt is an unknown-recipient reject from ip for recipient n.
func unknownRcpt(ip string, n int) string {
	return fmt.Sprintf("Nov 25 10:49:%02d mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <u%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<u%d@example.com> proto=ESMTP helo=<friend>",
		n%60, ip, n, n)
}

const otherLine = "Nov 25 10:49:30 mx1 postfix/qmgr[1]: 4BBB1A5: removed"

// The log position is not acknowledged past a line whose decision was
// neither recorded nor queued, until the detector has decided again (on
// the client's next evidence) and that decision was recorded.
func TestFollowHoldsAcksForLostDecisions(t *testing.T) {
	const a, b = "203.0.113.7", "198.51.100.9"
	attack := func(ip string, from, n int) []string {
		var ls []string
		for i := range n {
			ls = append(ls, unknownRcpt(ip, from+i))
		}
		return ls
	}
	tests := []struct {
		name      string
		logs      map[string][]string // path → lines; offsets are line numbers
		results   []string
		wantAcked map[string][]int64
		evidence  []int // of each decision the decider saw
	}{
		{
			name:      "recorded",
			logs:      map[string][]string{"mail.log": append(attack(a, 0, 5), otherLine)},
			wantAcked: map[string][]int64{"mail.log": {1, 2, 3, 4, 5, 6}},
			evidence:  []int{5},
		},
		{
			name:      "lost: held from its line on",
			logs:      map[string][]string{"mail.log": append(attack(a, 0, 5), otherLine, otherLine)},
			results:   []string{"lost"},
			wantAcked: map[string][]int64{"mail.log": {1, 2, 3, 4}},
			evidence:  []int{5},
		},
		{
			name: "lost, then decided again at the next evidence and recorded",
			logs: map[string][]string{"mail.log": slices.Concat(attack(a, 0, 5), []string{otherLine},
				attack(a, 5, 1), []string{otherLine})},
			results:   []string{"lost", "ok"},
			wantAcked: map[string][]int64{"mail.log": {1, 2, 3, 4, 7, 8}},
			evidence:  []int{5, 6},
		},
		{
			name: "lost twice: held until the third is recorded",
			logs: map[string][]string{"mail.log": slices.Concat(attack(a, 0, 5), attack(a, 5, 2),
				[]string{otherLine})},
			results:   []string{"lost", "lost", "ok"},
			wantAcked: map[string][]int64{"mail.log": {1, 2, 3, 4, 7, 8}},
			evidence:  []int{5, 6, 7},
		},
		{
			name:      "another client's recorded decision does not release",
			logs:      map[string][]string{"mail.log": slices.Concat(attack(a, 0, 5), attack(b, 0, 5), []string{otherLine})},
			results:   []string{"lost", "ok"},
			wantAcked: map[string][]int64{"mail.log": {1, 2, 3, 4}},
			evidence:  []int{5, 5},
		},
		{
			name:      "an invalid decision is not held",
			logs:      map[string][]string{"mail.log": append(attack(a, 0, 5), otherLine)},
			results:   []string{"invalid"},
			wantAcked: map[string][]int64{"mail.log": {1, 2, 3, 4, 5, 6}},
			evidence:  []int{5},
		},
		{
			name: "a held path does not hold another",
			logs: map[string][]string{"mail.log": append(attack(a, 0, 5), otherLine),
				"other.log": {otherLine, otherLine}},
			results:   []string{"lost"},
			wantAcked: map[string][]int64{"mail.log": {1, 2, 3, 4}, "other.log": {1, 2}},
			evidence:  []int{5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &listSource{acked: map[string][]int64{}}
			for _, path := range []string{"mail.log", "other.log"} {
				for i, text := range tt.logs[path] {
					src.lines = append(src.lines, tailer.Line{Text: text, Path: path, File: path,
						Pos: tailer.Position{Offset: int64(i + 1)}})
				}
			}
			cfg := detectors.DefaultConfig()
			cfg.ErrorBurst.Enabled = false // only dictionary decides here
			det, err := detectors.New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			dec := &scriptDecider{results: tt.results}
			p := New(det, dec, nil)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Follow(ctx, src, time.UTC) }()
			for p.Stats().Lines < uint64(len(src.lines)) {
				time.Sleep(time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{"mail.log", "other.log"} {
				if got := src.acked[path]; !slices.Equal(got, tt.wantAcked[path]) {
					t.Errorf("%s acknowledged %v, want %v", path, got, tt.wantAcked[path])
				}
			}
			var ev []int
			for _, d := range dec.calls {
				ev = append(ev, d.Evidence)
			}
			if !slices.Equal(ev, tt.evidence) {
				t.Errorf("decisions with evidence %v, want %v", ev, tt.evidence)
			}
		})
	}
}

// Failed decisions are counted and logged at most once a minute.
func TestDecideErrorsLoggedOncePerMinute(t *testing.T) {
	var logs bytes.Buffer
	det, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lost := make([]string, 50)
	for i := range lost {
		lost[i] = "lost"
	}
	p := New(det, &scriptDecider{results: lost}, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := context.Background()
	for i := range 50 {
		d := detectors.Decision{Detector: detectors.Pregreet, Evidence: 1}
		d.Prefix = netipPrefix(fmt.Sprintf("198.51.100.%d", i+1))
		p.decide(ctx, d, false)
	}
	if got := strings.Count(logs.String(), "level=ERROR"); got != 1 {
		t.Errorf("%d error lines for 50 lost decisions, want 1:\n%s", got, logs.String())
	}
	if st := p.Stats(); st.DecideErrors != 50 || st.NotRecorded != 50 {
		t.Errorf("stats: %d errors, %d not recorded, want 50 each", st.DecideErrors, st.NotRecorded)
	}
}

func netipPrefix(ip string) netip.Prefix {
	a := netip.MustParseAddr(ip)
	return netip.PrefixFrom(a, a.BitLen())
}
