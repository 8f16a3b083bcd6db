package pipeline

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/logparse"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	Detectors detectors.Config
	Allowlist []string // besides loopback (the host's addresses are not added: replay is deterministic)
	Ban       ban.Config
	Loc       *time.Location // zone of stamps without one; nil = Local
	Stdin     io.Reader      // for "-"
}

// ReplayBan is one ban replay would have made, in its final state after
// its extensions (the `replay --format json` contract: ip, detector,
// reason, evidence, time, until, offence, lines).
type ReplayBan struct {
	IP       netip.Prefix `json:"ip"`
	Detector string       `json:"detector"`
	Reason   string       `json:"reason"`
	Evidence int          `json:"evidence"`
	Time     time.Time    `json:"time"`
	Until    time.Time    `json:"until"`
	Offence  int          `json:"offence"`
	Lines    []string     `json:"lines,omitempty"`
}

// DetectorSummary counts one detector's decisions in a replay.
type DetectorSummary struct {
	Detector  string `json:"detector"`
	Decisions int    `json:"decisions"`
	Bans      int    `json:"bans"`     // new bans
	Extended  int    `json:"extended"` // decisions for a prefix already banned
	Refused   int    `json:"refused"`  // allowlisted or broader than ban.max_prefix_v4/v6
	Warned    int    `json:"warned"`   // detector in warn mode
}

// ReplayResult is what Replay found.
type ReplayResult struct {
	Bans    []ReplayBan       // in order of decision
	Summary []DetectorSummary // every detector, in detectors.Names order, then prefix_escalation, manual...
	Stats   Stats
}

// Replay runs the detectors over old logs, in the order given ("-" is
// stdin; plain or gzip), and decides over a ban Manager with an empty
// memory store and no actions whose clock is the log time of each decision:
// the daemon's decision (allowlist, maximum prefix length, extension of
// active bans, escalation of repeat offenders) without store, firewall or
// side effect.
func Replay(ctx context.Context, files []string, opts ReplayOptions) (ReplayResult, error) {
	det, err := detectors.New(opts.Detectors, nil)
	if err != nil {
		return ReplayResult{}, err
	}
	rd, err := newReplayDecider(opts.Allowlist, opts.Ban)
	if err != nil {
		return ReplayResult{}, err
	}
	defer rd.m.Close()
	p := New(det, rd, nil)
	p.SetClock(nil) // the log is the clock: old logs replay as written
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return ReplayResult{}, err
		}
		in, err := logparse.Open(f, opts.Stdin)
		if err != nil {
			return ReplayResult{}, err
		}
		parser := logparse.NewParser(opts.Loc, in.ModTime)
		var st logparse.LineStats
		err = logparse.ScanLines(in.Reader(), &st, func(line string) error {
			p.HandleLine(ctx, parser, line)
			return nil
		})
		p.CountTooLong(uint64(st.TooLong))
		in.Close()
		if err != nil {
			return ReplayResult{}, fmt.Errorf("%s: %w", f, err)
		}
	}
	ms, err := rd.m.Status()
	if err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{Bans: rd.bans, Stats: p.Stats()}
	order := append(detectors.Names(), detectors.PrefixEscalation)
	var other []string
	for n := range ms.Detectors {
		if !slices.Contains(order, n) {
			other = append(other, n)
		}
	}
	slices.Sort(other)
	for _, n := range append(order, other...) {
		s := ms.Detectors[n]
		res.Summary = append(res.Summary, DetectorSummary{Detector: n, Decisions: int(s.Decisions),
			Bans: int(s.Bans), Extended: int(s.Extended), Refused: int(s.Refused), Warned: int(s.Warned)})
	}
	return res, nil
}

// replayDecider decides through a Manager whose clock it sets to each
// decision's log time, and keeps one ReplayBan per ban (new offence),
// updated by the ban's extensions.
type replayDecider struct {
	m     *ban.Manager
	mem   *store.Memory
	clock time.Time // log time of the decision being decided
	last  map[netip.Prefix]int
	bans  []ReplayBan
}

func newReplayDecider(allow []string, bc ban.Config) (*replayDecider, error) {
	rd := &replayDecider{mem: store.NewMemory(), last: map[netip.Prefix]int{}}
	m, err := ban.NewManager(ban.ManagerConfig{
		Allowlist: allow, Ban: bc, Now: func() time.Time { return rd.clock },
		// no host addresses: replay gives the same answer on every machine
		AllowSources: []func() ([]netip.Prefix, error){},
	}, rd.mem, nil, nil)
	if err != nil {
		return nil, err
	}
	rd.m = m
	return rd, nil
}

func (rd *replayDecider) Decide(ctx context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	if !d.Time.IsZero() {
		rd.clock = d.Time
	}
	b, ok, err := rd.m.Decide(ctx, d)
	if !ok || err != nil {
		return b, ok, err
	}
	i, seen := rd.last[b.Prefix]
	if !seen || !rd.bans[i].Time.Equal(b.Since) || rd.bans[i].Offence != b.Offence {
		i = len(rd.bans)
		rd.last[b.Prefix] = i
		rd.bans = append(rd.bans, ReplayBan{IP: b.Prefix, Detector: b.Detector, Reason: b.Reason,
			Time: b.Since, Offence: b.Offence})
	}
	rec, _, err := rd.mem.Get(b.Prefix)
	if err != nil {
		return b, ok, err
	}
	rb := &rd.bans[i]
	rb.Evidence, rb.Until, rb.Lines = b.Evidence, b.Until, rec.Lines
	return b, ok, nil
}
