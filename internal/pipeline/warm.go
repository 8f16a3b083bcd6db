package pipeline

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/tailer"
	"github.com/mxguard/mxguard/logparse"
)

// lineInFlight is the log line whose event is being decided, carried in
// the context of its decisions (see DecisionLine).
type lineInFlight struct {
	line    tailer.Line
	decided int // decisions taken for it so far (skipped ones included)
	skip    int // its first decisions, not to be taken again: taken before a restart
	// held: no position may be saved with this line's decisions, because
	// its log's checkpoint is held for a decision not recorded (see
	// Follow), or one of its own decisions was not recorded. A position
	// saved with a later decision would skip the lost one at a restart.
	held bool
}

type lineKey struct{}

func withLineInFlight(ctx context.Context) (context.Context, *lineInFlight) {
	lf := &lineInFlight{}
	return context.WithValue(ctx, lineKey{}, lf), lf
}

func lineInFlightOf(ctx context.Context) *lineInFlight {
	lf, _ := ctx.Value(lineKey{}).(*lineInFlight)
	return lf
}

// DecisionLine returns, inside Decider.Decide, the log line the decision
// comes from, its Pos.Partial set to how many of the line's decisions have
// been taken with this one; false for a decision that does not come from a
// followed log (the guard's). A Decider that stores the decision together
// with this position (tailer.Follower.AckWith) makes a restart after a
// crash neither take it again nor lose it.
func DecisionLine(ctx context.Context) (tailer.Line, bool) {
	lf := lineInFlightOf(ctx)
	if lf == nil || lf.held {
		return tailer.Line{}, false
	}
	l := lf.line
	l.Pos.Partial = lf.decided
	return l, true
}

// Lookback reads again the lines before the follower's checkpoints
// (tailer.Follower.Lookback).
type Lookback interface {
	Lookback(ctx context.Context, older func(path, line string) bool, fn func(tailer.Line)) error
}

// WarmStats counts what Warm read again at start.
type WarmStats struct {
	Lines     uint64 `json:"lines"`     // lines before the checkpoints read again
	Decisions uint64 `json:"decisions"` // decisions they led to again, not taken twice
	Resumed   uint64 `json:"resumed"`   // decisions of the checkpoint's line a crash cut short, taken now
	Millis    uint64 `json:"ms"`        // how long it took
}

type warmCounters struct {
	lines, decisions, resumed, millis atomic.Uint64
}

// Warm gives the detectors back the state they had when the daemon
// stopped, before Follow continues from the checkpoints: it reads the log
// again from twice the longest detector window before each checkpoint (a
// decision's window, and the one before it whose decision may have muted
// it) up to the checkpoint, and feeds it to the detectors without taking
// their decisions again: those were taken before the checkpoint was
// saved. The exception is the checkpoint's own line when a crash cut its
// decisions short (Pos.Partial): the ones not yet taken are taken now.
// Stamps without a zone are read in loc (nil = Local).
func (p *Pipeline) Warm(ctx context.Context, src Lookback, loc *time.Location) error {
	start := time.Now()
	span := 2 * p.det.Load().LongestWindow()
	probe := logparse.NewParser(loc, time.Time{})
	newest := map[string]time.Time{}
	older := func(path, line string) bool {
		var ev event.Event
		_ = probe.ParseInto(line, &ev) // the time is set for every Postfix line
		if ev.Time.IsZero() {
			return false
		}
		n, ok := newest[path]
		if !ok {
			newest[path] = ev.Time
			return false
		}
		return ev.Time.Before(n.Add(-span))
	}
	parser := logparse.NewParser(loc, time.Time{})
	lctx, lf := withLineInFlight(ctx)
	var ev event.Event
	err := src.Lookback(ctx, older, func(l tailer.Line) {
		p.warm.lines.Add(1)
		*lf = lineInFlight{line: l, skip: math.MaxInt}
		if l.Pos.Partial > 0 {
			lf.skip = l.Pos.Partial
		}
		if parser.ParseInto(l.Text, &ev) != nil {
			return
		}
		p.dateEvent(&ev)
		for _, d := range p.det.Load().Observe(ev) {
			taken := lf.decided >= lf.skip // not taken before the crash: decide it now
			if p.decide(lctx, d, true) && taken {
				p.warm.resumed.Add(1)
			}
		}
	})
	p.warm.millis.Store(uint64(time.Since(start).Milliseconds()))
	st := p.Stats().Warm
	p.log.Info("detectors warmed up from the log before the checkpoints", "lines", st.Lines,
		"decisions_not_taken_again", st.Decisions, "decisions_resumed", st.Resumed,
		"span", span.String(), "took", time.Since(start).Round(time.Millisecond).String())
	return err
}
