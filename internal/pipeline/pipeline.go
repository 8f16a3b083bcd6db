// Package pipeline is the shared pipeline of the daemon, the replay command
// and the inline guard: log line → event.Event → detectors → ban
// manager, with the counters that `mxguard status` and the metrics
// endpoint report.
package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nxadm/tail/ratelimiter"

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
	context      atomic.Uint64
	events       atomic.Uint64
	kinds        [64]atomic.Uint64
	decideErrs   atomic.Uint64
	warm         warmCounters
	notRecorded  atomic.Uint64
	heldPaths    atomic.Int64 // log paths whose position Follow holds back
	futureLines  atomic.Uint64

	mu        sync.Mutex
	decisions map[string]uint64 // by detector
	bans      map[string]uint64 // decisions that banned (or extended), by detector
	owed      owedDecisions     // log decisions not recorded, not yet decided again
	errLog    *ratelimiter.LeakyBucket
	errQuiet  uint64 // decide errors not logged since the last one logged
}

// New returns a Pipeline. dec may be nil (detect only); logger nil discards.
func New(det *detectors.Engine, dec Decider, logger *slog.Logger) *Pipeline {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{dec: dec, log: logger, now: time.Now, decisions: map[string]uint64{}, bans: map[string]uint64{},
		owed: owedDecisions{m: map[owedKey]struct{}{}}, errLog: ratelimiter.NewLeakyBucket(1, time.Minute)}
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
	t, ok, _ := p.handleLine(ctx, parser, line, false)
	return t, ok
}

// handleLine is HandleLine that also returns how many of the line's
// decisions were neither recorded nor queued (ban.ErrNotRecorded); with
// fromLog they are remembered until decided again (see Follow).
func (p *Pipeline) handleLine(ctx context.Context, parser *logparse.Parser, line string, fromLog bool) (time.Time, bool, int) {
	p.lines.Add(1)
	var ev event.Event
	if err := parser.ParseInto(line, &ev); err != nil {
		switch {
		case errors.Is(err, logparse.ErrNotPostfix):
			p.notPostfix.Add(1)
		case errors.Is(err, logparse.ErrContext):
			p.context.Add(1)
		default:
			p.unrecognized.Add(1)
		}
		return time.Time{}, false, 0
	}
	stamp := ev.Time
	p.dateEvent(&ev)
	return stamp, true, p.handleEvent(ctx, ev, fromLog)
}

// dateEvent dates an event stamped more than FutureTolerance ahead of the
// clock now, and counts it: a forged or mis-zoned line must neither push
// a ban into the future nor pin the detectors' clock there.
func (p *Pipeline) dateEvent(ev *event.Event) {
	if p.now == nil {
		return
	}
	if now := p.now(); ev.Time.After(now.Add(FutureTolerance)) {
		p.futureLines.Add(1)
		ev.Time = now
	}
}

// CountTooLong counts lines skipped by the reader for their length.
func (p *Pipeline) CountTooLong(n uint64) {
	p.lines.Add(n)
	p.tooLong.Add(n)
}

// HandleEvent runs the detectors over ev and decides their decisions. The
// event's strings may alias a reused buffer: nothing here keeps them.
func (p *Pipeline) HandleEvent(ctx context.Context, ev event.Event) {
	p.handleEvent(ctx, ev, false)
}

func (p *Pipeline) handleEvent(ctx context.Context, ev event.Event, fromLog bool) (lost int) {
	p.events.Add(1)
	p.kinds[int(ev.Kind)&63].Add(1)
	ds := p.det.Load().Observe(ev)
	for _, d := range ds {
		if !p.decide(ctx, d, fromLog) {
			lost++
		}
	}
	return lost
}

// decide hands d to the Decider. It returns false when the decision was
// neither recorded nor queued (ban.ErrNotRecorded): the detector takes it
// back to decide again on the client's next evidence.
//
// A decision of a line read again after a crash that was already taken
// (see Warm) is skipped, and counts as recorded.
func (p *Pipeline) decide(ctx context.Context, d detectors.Decision, fromLog bool) bool {
	if lf := lineInFlightOf(ctx); lf != nil {
		lf.decided++
		if lf.decided <= lf.skip {
			p.warm.decisions.Add(1)
			return true
		}
	}
	var (
		b      ban.Ban
		banned bool
		err    error
	)
	if p.dec != nil {
		b, banned, err = p.dec.Decide(ctx, d)
	}
	lost := errors.Is(err, ban.ErrNotRecorded)
	if lost {
		p.notRecorded.Add(1)
		p.det.Load().Redecide(d)
		if lf := lineInFlightOf(ctx); lf != nil {
			lf.held = true // the line's later decisions must not save its position
		}
	}
	p.mu.Lock()
	p.decisions[d.Detector]++
	if banned {
		p.bans[d.Detector]++
	}
	switch {
	case lost && fromLog:
		p.owed.add(d)
	case err == nil:
		p.owed.settle(d)
	}
	if err != nil {
		p.decideErrs.Add(1)
		// A full disk fails every decision: one line a minute says so.
		if p.errLog.Pour(1) {
			p.log.Error("decide", "ip", d.Prefix, "detector", d.Detector, "err", err,
				"not_logged_since", p.errQuiet, "awaiting_redecision", len(p.owed.m))
			p.errQuiet = 0
		} else {
			p.errQuiet++
		}
	}
	p.mu.Unlock()
	if h := p.hook.Load(); h != nil {
		(*h)(d, b, banned, err)
	}
	return !lost
}

// owedKey names a detector's decision for one client.
type owedKey struct {
	prefix   netip.Prefix
	detector string
}

// owedDecisions are the log decisions that were neither recorded nor
// queued and have not been decided again (and recorded) since. Past max
// entries it stops tracking and stays owing until the next start.
type owedDecisions struct {
	m        map[owedKey]struct{}
	overflow bool
}

const maxOwed = 100_000

func (o *owedDecisions) add(d detectors.Decision) {
	if len(o.m) >= maxOwed {
		o.overflow = true
		return
	}
	o.m[owedKey{d.Prefix, d.Detector}] = struct{}{}
}

func (o *owedDecisions) settle(d detectors.Decision) {
	if len(o.m) > 0 {
		delete(o.m, owedKey{d.Prefix, d.Detector})
	}
}

func (o *owedDecisions) none() bool { return len(o.m) == 0 && !o.overflow }

// settled reports whether every decision Follow saw lost has been decided
// again and recorded.
func (p *Pipeline) settled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owed.none()
}

// Stats is a snapshot of the pipeline's counters.
type Stats struct {
	Lines        uint64            `json:"lines"`        // lines read
	TooLong      uint64            `json:"too_long"`     // of which skipped for their length
	NotPostfix   uint64            `json:"not_postfix"`  // other programs' lines, no syslog header
	Unrecognized uint64            `json:"unrecognized"` // Postfix lines of no interest
	Context      uint64            `json:"context"`      // recognised Postfix lines about the mail system, not a client (master, anvil, TLS summaries)
	Events       uint64            `json:"events"`       // events handled (log and guard)
	Kinds        map[string]uint64 `json:"events_by_kind"`
	Decisions    map[string]uint64 `json:"decisions"` // by detector
	Bans         map[string]uint64 `json:"bans"`      // decisions that banned or extended a ban, by detector
	DecideErrors uint64            `json:"decide_errors"`
	// NotRecorded counts decisions the ban manager neither recorded nor
	// queued; the detector decides them again on the next evidence.
	NotRecorded uint64 `json:"decisions_not_recorded"`
	// AwaitingRedecision: log decisions not recorded and not decided again
	// yet; while there are any, HeldPaths logs keep their checkpoint.
	AwaitingRedecision int `json:"awaiting_redecision"`
	HeldPaths          int `json:"checkpoint_held_paths"`
	// FutureLines: stamped more than FutureTolerance ahead of the clock,
	// their events dated now.
	FutureLines uint64 `json:"future_lines"`
	Clients     int    `json:"tracked_clients"`
	// Warm: read again at start, not counted above.
	Warm WarmStats `json:"warm"`
}

// Skipped is every line that produced no event.
func (s Stats) Skipped() uint64 { return s.TooLong + s.NotPostfix + s.Unrecognized + s.Context }

// Stats returns a snapshot.
func (p *Pipeline) Stats() Stats {
	st := Stats{
		Lines: p.lines.Load(), TooLong: p.tooLong.Load(), NotPostfix: p.notPostfix.Load(),
		Unrecognized: p.unrecognized.Load(), Context: p.context.Load(), Events: p.events.Load(), DecideErrors: p.decideErrs.Load(),
		NotRecorded: p.notRecorded.Load(), HeldPaths: int(p.heldPaths.Load()), FutureLines: p.futureLines.Load(),
		Kinds: map[string]uint64{}, Decisions: map[string]uint64{}, Bans: map[string]uint64{},
		Warm: WarmStats{Lines: p.warm.lines.Load(), Decisions: p.warm.decisions.Load(),
			Resumed: p.warm.resumed.Load(), Millis: p.warm.millis.Load()},
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
	st.AwaitingRedecision = len(p.owed.m)
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
