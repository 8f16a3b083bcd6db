package pipeline

import (
	"context"
	"time"

	"github.com/mxguard/mxguard/internal/tailer"
	"github.com/mxguard/mxguard/logparse"
)

// LineSource is the log follower (tailer.Follower): Run sends lines to out
// until ctx is done; Ack marks a line processed (its position is then
// checkpointed).
type LineSource interface {
	Run(ctx context.Context, out chan<- tailer.Line) error
	Ack(l tailer.Line)
}

// Follow runs src and handles every line it sends: parse (year anchor: the
// wall clock; stamps without a zone in loc, nil = Local), detect, decide,
// then Ack. It returns when ctx is done and src.Run has returned (with
// Run's error), or when src.Run fails. Lines received but not processed
// are not acknowledged, so a restart reads them again.
//
// A decision the ban manager neither recorded nor queued (a full store and
// a full persist queue) must not be lost with its line: from that line on
// its log's lines are not acknowledged, so the checkpoint stays before it,
// until every such decision has been decided again (the detector does so
// on the client's next evidence) and recorded. Then the newest line of
// each held log is acknowledged. A restart meanwhile reads the held lines
// again and decides anew.
func (p *Pipeline) Follow(ctx context.Context, src LineSource, loc *time.Location) error {
	out := make(chan tailer.Line, 1024)
	errc := make(chan error, 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { errc <- src.Run(runCtx, out) }()
	parser := logparse.NewParser(loc, time.Time{})
	var skew skewCheck
	lctx, lf := withLineInFlight(ctx) // the line a decision comes from: DecisionLine
	held := map[string]tailer.Line{}  // log path → its newest line, not acknowledged
	defer p.heldPaths.Store(0)
	for {
		select {
		case l := <-out:
			_, holding := held[l.Path]
			*lf = lineInFlight{line: l, held: holding}
			t, ok, lost := p.handleLine(lctx, parser, l.Text, true)
			if ok {
				skew.check(p, t, time.Now())
			}
			if !holding && lost == 0 {
				src.Ack(l)
				continue
			}
			held[l.Path] = l
			if lost == 0 && p.settled() {
				for path, hl := range held {
					src.Ack(hl)
					delete(held, path)
				}
			}
			p.heldPaths.Store(int64(len(held)))
		case err := <-errc:
			return err
		case <-ctx.Done():
			for { // let Run finish (final checkpoint); drop what it still sends
				select {
				case err := <-errc:
					return err
				case <-out:
				}
			}
		}
	}
}

// skewCheck warns (once an hour) when fresh log lines are stamped far from
// the clock: a wrong time zone makes every ban start in the past, and a
// ban already over when it is decided is recorded but never applied.
type skewCheck struct{ warned time.Time }

const maxSkew = 30 * time.Minute

func (s *skewCheck) check(p *Pipeline, t, now time.Time) {
	d := now.Sub(t)
	if d < maxSkew && d > -maxSkew || now.Sub(s.warned) < time.Hour {
		return
	}
	s.warned = now
	p.log.Warn("log time stamps are far from the clock: check tail.tz (or a backlog is being read)",
		"skew", d.Round(time.Second).String(), "line_time", t)
}
