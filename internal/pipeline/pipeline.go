// Package pipeline is the shared pipeline of the daemon, the replay command
// and the inline guard: log line → event.Event → detectors → ban
// manager, with the counters that `mxguard status` and the metrics
// endpoint report.
package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/logparse"
)

// Decider turns a detector decision into a ban: a ban.Manager, over the
// bbolt store in the daemon and over a memory store in replay.
type Decider interface {
	Decide(ctx context.Context, d detectors.Decision) (ban.Ban, bool, error)
}

// DecisionHook, if set, is called after each decision has been decided
// (tests and the latency benchmark use it).
type DecisionHook func(d detectors.Decision, b ban.Ban, banned bool, err error)

// Pipeline feeds events to the detectors and their decisions to a Decider.
// It is safe for concurrent use: the log follower and the inline guard may
// feed the same Pipeline (each with its own logparse.Parser).
type Pipeline struct {
	det  atomic.Pointer[detectors.Engine]
	dec  Decider
	log  *slog.Logger
	hook atomic.Pointer[DecisionHook]
	now  func() time.Time // nil: the log is the clock (replay)

	lines        atomic.Uint64
	tooLong      atomic.Uint64
	notPostfix   atomic.Uint64
	unrecognized atomic.Uint64
	events       atomic.Uint64
	kinds        [64]atomic.Uint64
	decideErrs   atomic.Uint64
	futureLines  atomic.Uint64

	mu        sync.Mutex
	decisions map[string]uint64 // by detector
	bans      map[string]uint64 // decisions that banned (or extended), by detector
}

// New returns a Pipeline. dec may be nil (detect only); logger nil discards.
func New(det *detectors.Engine, dec Decider, logger *slog.Logger) *Pipeline {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{dec: dec, log: logger, now: time.Now, decisions: map[string]uint64{}, bans: map[string]uint64{}}
	p.det.Store(det)
	return p
}

// FutureTolerance is how far ahead of the clock a line may be stamped and
// still date its events: a syslog host whose clock runs a little fast is
// common; a line an hour or more ahead is a wrong clock, a wrong tail.tz or
// a forged line.
const FutureTolerance = time.Hour

// SetClock sets the clock that log stamps are checked against (New sets
// time.Now); nil means the log is the clock (replay: no line is ahead of
// it). Call it before the Pipeline is used.
func (p *Pipeline) SetClock(now func() time.Time) { p.now = now }

// SetDetectors swaps the detector engine (config reload). The sliding
// windows of the old engine are lost.
func (p *Pipeline) SetDetectors(det *detectors.Engine) { p.det.Store(det) }

// Detectors returns the engine in use.
func (p *Pipeline) Detectors() *detectors.Engine { return p.det.Load() }

// SetHook installs (or with nil removes) the decision hook.
func (p *Pipeline) SetHook(h DecisionHook) {
	if h == nil {
		p.hook.Store(nil)
		return
	}
	p.hook.Store(&h)
}

// HandleLine parses one log line and handles its event. Lines that are not
// Postfix's or of no interest are counted and skipped. A line stamped more
// than FutureTolerance ahead of the clock is counted and its event dated
// now. It returns the line's time as stamped and whether it was a
// recognised Postfix line.
func (p *Pipeline) HandleLine(ctx context.Context, parser *logparse.Parser, line string) (time.Time, bool) {
	p.lines.Add(1)
	var ev event.Event
	if err := parser.ParseInto(line, &ev); err != nil {
		if errors.Is(err, logparse.ErrNotPostfix) {
			p.notPostfix.Add(1)
		} else {
			p.unrecognized.Add(1)
		}
		return time.Time{}, false
	}
	stamp := ev.Time
	if p.now != nil {
		if now := p.now(); stamp.After(now.Add(FutureTolerance)) {
			p.futureLines.Add(1)
			ev.Time = now
		}
	}
	p.HandleEvent(ctx, ev)
	return stamp, true
}

// CountTooLong counts lines skipped by the reader for their length.
func (p *Pipeline) CountTooLong(n uint64) {
	p.lines.Add(n)
	p.tooLong.Add(n)
}

// HandleEvent runs the detectors over ev and decides their decisions. The
// event's strings may alias a reused buffer: nothing here keeps them.
func (p *Pipeline) HandleEvent(ctx context.Context, ev event.Event) {
	p.events.Add(1)
	p.kinds[int(ev.Kind)&63].Add(1)
	ds := p.det.Load().Observe(ev)
	for _, d := range ds {
		p.decide(ctx, d)
	}
}

func (p *Pipeline) decide(ctx context.Context, d detectors.Decision) {
	var (
		b      ban.Ban
		banned bool
		err    error
	)
	if p.dec != nil {
		b, banned, err = p.dec.Decide(ctx, d)
	}
	p.mu.Lock()
	p.decisions[d.Detector]++
	if banned {
		p.bans[d.Detector]++
	}
	p.mu.Unlock()
	if err != nil {
		p.decideErrs.Add(1)
		p.log.Error("decide", "ip", d.Prefix, "detector", d.Detector, "err", err)
	}
	if h := p.hook.Load(); h != nil {
		(*h)(d, b, banned, err)
	}
}

// Stats is a snapshot of the pipeline's counters.
type Stats struct {
	Lines        uint64            `json:"lines"`        // lines read
	TooLong      uint64            `json:"too_long"`     // of which skipped for their length
	NotPostfix   uint64            `json:"not_postfix"`  // other programs' lines, no syslog header
	Unrecognized uint64            `json:"unrecognized"` // Postfix lines of no interest
	Events       uint64            `json:"events"`       // events handled (log and guard)
	Kinds        map[string]uint64 `json:"events_by_kind"`
	Decisions    map[string]uint64 `json:"decisions"` // by detector
	Bans         map[string]uint64 `json:"bans"`      // decisions that banned or extended a ban, by detector
	DecideErrors uint64            `json:"decide_errors"`
	FutureLines  uint64            `json:"future_lines"` // stamped more than FutureTolerance ahead of the clock: dated now
	Clients      int               `json:"tracked_clients"`
}

// Skipped is every line that produced no event.
func (s Stats) Skipped() uint64 { return s.TooLong + s.NotPostfix + s.Unrecognized }

// Stats returns a snapshot.
func (p *Pipeline) Stats() Stats {
	st := Stats{
		Lines: p.lines.Load(), TooLong: p.tooLong.Load(), NotPostfix: p.notPostfix.Load(),
		Unrecognized: p.unrecognized.Load(), Events: p.events.Load(), DecideErrors: p.decideErrs.Load(),
		FutureLines: p.futureLines.Load(),
		Kinds:       map[string]uint64{}, Decisions: map[string]uint64{}, Bans: map[string]uint64{},
	}
	for _, k := range event.Kinds() {
		if n := p.kinds[int(k)&63].Load(); n > 0 {
			st.Kinds[k.String()] = n
		}
	}
	p.mu.Lock()
	for k, v := range p.decisions {
		st.Decisions[k] = v
	}
	for k, v := range p.bans {
		st.Bans[k] = v
	}
	p.mu.Unlock()
	if d := p.det.Load(); d != nil {
		st.Clients = d.Stats().Clients
	}
	return st
}

// SortedKeys returns m's keys in order (for stable output).
func SortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Rate measures lines per second between two snapshots.
type Rate struct {
	mu    sync.Mutex
	lastT time.Time
	lastN uint64
	rate  float64
}

// Update records n lines at t and returns the rate since the previous call
// at least a second earlier.
func (r *Rate) Update(t time.Time, n uint64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastT.IsZero() {
		r.lastT, r.lastN = t, n
		return 0
	}
	if dt := t.Sub(r.lastT); dt >= time.Second {
		r.rate = float64(n-r.lastN) / dt.Seconds()
		r.lastT, r.lastN = t, n
	}
	return r.rate
}
