package pipeline

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
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

// ReplayBan is one ban replay would have made (the `replay --format json`
// contract: ip, detector, reason, evidence, time).
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
// stdin; plain or gzip), and simulates the ban manager: allowlist, maximum
// prefix length, extension of active bans and escalation of repeat
// offenders, all in log time. No store, no action, no side effect.
func Replay(ctx context.Context, files []string, opts ReplayOptions) (ReplayResult, error) {
	det, err := detectors.New(opts.Detectors, nil)
	if err != nil {
		return ReplayResult{}, err
	}
	sim, err := newSimulator(opts.Allowlist, opts.Ban)
	if err != nil {
		return ReplayResult{}, err
	}
	p := New(det, sim, nil)
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
	res := ReplayResult{Bans: sim.bans, Stats: p.Stats()}
	order := append(detectors.Names(), detectors.PrefixEscalation)
	for _, n := range order {
		s := sim.sum[n]
		if s == nil {
			s = &DetectorSummary{}
		}
		s.Detector = n
		res.Summary = append(res.Summary, *s)
	}
	var other []string
	for n := range sim.sum {
		if !slices.Contains(order, n) {
			other = append(other, n)
		}
	}
	slices.Sort(other)
	for _, n := range other {
		res.Summary = append(res.Summary, *sim.sum[n])
	}
	return res, nil
}

// simulator is the ban manager's logic without store or actions.
type simulator struct {
	allow  *ban.Allowlist
	ban    ban.Config
	active map[netip.Prefix]int         // index into bans of the prefix's last ban
	times  map[netip.Prefix][]time.Time // offence times
	bans   []ReplayBan
	sum    map[string]*DetectorSummary
}

func newSimulator(allow []string, bc ban.Config) (*simulator, error) {
	bc = bc.WithDefaults()
	if err := bc.Validate(); err != nil {
		return nil, err
	}
	al, err := ban.NewAllowlist(allow)
	if err != nil {
		return nil, fmt.Errorf("allowlist: %w", err)
	}
	return &simulator{allow: al, ban: bc, active: map[netip.Prefix]int{},
		times: map[netip.Prefix][]time.Time{}, sum: map[string]*DetectorSummary{}}, nil
}

func (s *simulator) Decide(_ context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	sum := s.sum[d.Detector]
	if sum == nil {
		sum = &DetectorSummary{Detector: d.Detector}
		s.sum[d.Detector] = sum
	}
	sum.Decisions++
	p := d.Prefix.Masked()
	switch {
	case d.Warn:
		sum.Warned++
		return ban.Ban{}, false, nil
	case s.allow.Contains(p), tooBroad(p, s.ban):
		sum.Refused++
		return ban.Ban{}, false, nil
	}
	if i, ok := s.active[p]; ok && s.bans[i].Until.After(d.Time) {
		b := &s.bans[i]
		if u := d.Time.Add(s.ban.Duration(b.Offence)); u.After(b.Until) {
			b.Until = u
		}
		sum.Extended++
		return replayToBan(*b), true, nil
	}
	// Offences within forget_after before this one count towards escalation.
	var recent []time.Time
	for _, t := range s.times[p] {
		if d.Time.Sub(t) < time.Duration(s.ban.ForgetAfter) {
			recent = append(recent, t)
		}
	}
	offence := len(recent) + 1
	s.times[p] = append(recent, d.Time)
	b := ReplayBan{IP: p, Detector: d.Detector, Reason: d.Reason, Evidence: d.Evidence, Time: d.Time,
		Until: d.Time.Add(s.ban.Duration(offence)), Offence: offence, Lines: d.Lines}
	s.active[p] = len(s.bans)
	s.bans = append(s.bans, b)
	sum.Bans++
	return replayToBan(b), true, nil
}

func replayToBan(b ReplayBan) ban.Ban {
	return ban.Ban{Prefix: b.IP, Detector: b.Detector, Reason: b.Reason, Evidence: b.Evidence,
		Since: b.Time, Until: b.Until, Offence: b.Offence, DryRun: true}
}

func tooBroad(p netip.Prefix, c ban.Config) bool {
	if p.Addr().Is4() {
		return p.Bits() < c.MaxPrefixV4
	}
	return p.Bits() < c.MaxPrefixV6
}
