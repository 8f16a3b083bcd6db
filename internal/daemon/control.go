package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/dnsbl"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/pipeline"
	"github.com/mxguard/mxguard/internal/policy"
	"github.com/mxguard/mxguard/internal/tailer"
	"github.com/mxguard/mxguard/smtpguard"
)

// ParseBanDuration reads a ban's "for": the config's duration syntax
// (internal/duration: "30m", "12h", "7d", at most duration.Max); ""
// means the escalation schedule, so 0 is refused rather than taken for it.
func ParseBanDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := duration.Parse(s)
	if err != nil {
		return 0, err
	}
	if d == 0 {
		return 0, fmt.Errorf("duration %q: must be positive", s)
	}
	return d.D(), nil
}

// UnbanResult is the reply to the unban command.
type UnbanResult struct {
	IP      netip.Prefix `json:"ip"`
	Removed bool         `json:"removed"`
}

// handle answers the control socket.
func (d *Daemon) handle(ctx context.Context, req control.Request) (any, error) {
	switch req.Cmd {
	case control.CmdBan:
		p, err := ban.ParsePrefix(req.IP)
		if err != nil {
			return nil, err
		}
		dur, err := ParseBanDuration(req.For)
		if err != nil {
			return nil, err
		}
		return d.mgr.Ban(ctx, p, dur, req.Reason)
	case control.CmdUnban:
		p, err := ban.ParsePrefix(req.IP)
		if err != nil {
			return nil, err
		}
		found, err := d.mgr.Unban(ctx, p)
		if err != nil {
			return nil, err
		}
		return UnbanResult{IP: p, Removed: found}, nil
	case control.CmdList:
		// Streamed: the list is taken only when this request's turn to
		// write comes, and encoded ban by ban.
		return control.Stream(func(yield func(any) bool) error {
			bans, err := d.mgr.List(time.Now())
			if err != nil {
				return fmt.Errorf("list: %w", err)
			}
			for _, b := range bans {
				if !yield(b) {
					break
				}
			}
			return nil
		}), nil
	case control.CmdExplain:
		p, err := ban.ParsePrefix(req.IP)
		if err != nil {
			return nil, err
		}
		return d.mgr.Explain(p)
	case control.CmdStatus:
		return d.Status()
	default:
		return nil, fmt.Errorf("unknown command %q (want ban, unban, list, explain or status)", req.Cmd)
	}
}

// Status is the reply to the status command.
type Status struct {
	PID         int                `json:"pid"`
	Started     time.Time          `json:"started"`
	Uptime      string             `json:"uptime"`
	Config      string             `json:"config"`
	DryRun      bool               `json:"dry_run"`
	Files       []tailer.FileStats `json:"files"`
	LinesPerSec float64            `json:"lines_per_sec"`
	Pipeline    pipeline.Stats     `json:"pipeline"`
	Restore     RestoreStatus      `json:"restore"`
	Manager     ban.ManagerStatus  `json:"manager"`
	Guard       *smtpguard.Stats   `json:"guard,omitempty"`
	Peers       []peers.Status     `json:"peers,omitempty"`
	Policy      *policy.Stats      `json:"policy,omitempty"`
	DNSBL       *dnsbl.Stats       `json:"dnsbl,omitempty"` // publish.dnsbl
}

// Status reports what the daemon does now.
func (d *Daemon) Status() (Status, error) {
	ms, err := d.mgr.Status()
	if err != nil {
		return Status{}, err
	}
	ps := d.pipe.Stats()
	now := time.Now()
	cfg := d.cfg.Load()
	lps := d.rate.Update(now, ps.Lines)
	if up := now.Sub(d.started).Seconds(); lps == 0 && up > 0 {
		lps = float64(ps.Lines) / up // no earlier sample yet: the average since start
	}
	st := Status{
		PID: os.Getpid(), Started: d.started, Uptime: now.Sub(d.started).Round(time.Second).String(),
		Config: cfg.Path, DryRun: cfg.DryRun, LinesPerSec: lps, Pipeline: ps, Manager: ms,
		Restore: d.restoreStatus(),
	}
	if d.follower != nil {
		st.Files = d.follower.Stats().Files
	}
	if d.guard != nil {
		gs := d.guard.Stats()
		st.Guard = &gs
	}
	if d.peers != nil {
		st.Peers = d.peers.Status()
	}
	if d.policy != nil {
		ps := d.policy.Stats()
		st.Policy = &ps
	}
	if d.dnsbl != nil {
		bs := d.dnsbl.Stats()
		st.DNSBL = &bs
	}
	return st, nil
}

func (d *Daemon) metrics() metrics.Snapshot {
	ps := d.pipe.Stats()
	s := metrics.Snapshot{
		Lines: ps.Lines, EventsByKind: ps.Kinds, Decisions: ps.Decisions, Bans: ps.Bans, FutureLines: ps.FutureLines,
		ParseSkipped: map[string]uint64{"not_postfix": ps.NotPostfix, "unrecognized": ps.Unrecognized, "context": ps.Context, "too_long": ps.TooLong},
		TailLagBytes: map[string]int64{}, ActionFailures: map[string]uint64{}, ActionPending: map[string]int{},
		DecisionsNotRecorded: ps.NotRecorded, CheckpointHeldPaths: ps.HeldPaths,
	}
	if d.follower != nil {
		for _, f := range d.follower.Stats().Files {
			s.TailLagBytes[f.Path] = f.Lag
		}
	}
	if d.guard != nil {
		gs := d.guard.Stats()
		s.Guard = &metrics.GuardSnapshot{BannedSessions: gs.BannedSessions, Stress: gs.Stress, StressEpisodes: gs.StressEpisodes}
	}
	if d.peers != nil {
		for _, p := range d.peers.Status() {
			s.Peers = append(s.Peers, metrics.PeerSnapshot{Name: p.Name, Serial: p.Serial, Entries: p.Entries,
				Skipped: p.Skipped, Failures: p.Failures, LastTransfer: p.LastTransfer})
		}
	}
	if d.policy != nil {
		s.Policy = policyMetrics(d.policy.Stats())
	}
	if d.dnsbl != nil {
		s.DNSBL = dnsblMetrics(d.dnsbl.Stats())
	}
	if ms, err := d.mgr.Status(); err == nil {
		s.ActiveBans = ms.ActiveBans + ms.DryRunBans
		s.PersistPending, s.PersistFailures, s.PersistDropped = ms.Persist.Pending, ms.Persist.Failures, ms.Persist.Dropped
		for _, a := range ms.Actions {
			s.ActionFailures[a.Name] = a.Failures
			s.ActionPending[a.Name] = a.Pending
		}
	}
	return s
}

// policyMetrics is the policy service's counters as the scrape names them.
func policyMetrics(ps policy.Stats) *metrics.PolicySnapshot {
	return &metrics.PolicySnapshot{Connections: ps.Connections, Active: ps.Active, Requests: ps.Requests,
		Closed: map[string]uint64{"refused": ps.Refused, "denied": ps.Denied, "bad_request": ps.BadRequests,
			"timeout": ps.Timeouts, "error": ps.Errors},
		Hits: map[string]uint64{"blocked": ps.Blocked, "helo": ps.Helo, "dnsbl": ps.DNSBL, "fcrdns": ps.FCrDNS,
			"greylisted": ps.Greylisted, "rate_limited": ps.RateLimited, "bad_client": ps.BadClient}}
}

// dnsblMetrics is the publisher's counters as the scrape names them.
func dnsblMetrics(bs dnsbl.Stats) *metrics.DNSBLSnapshot {
	m := &metrics.DNSBLSnapshot{Serial: bs.Serial, Listings: bs.Listings, Answers: bs.Answers, RateLimited: bs.RateLimited,
		Transfers: bs.Transfers, TransfersRefused: bs.TransfersRefused, TransfersFailed: bs.TransfersFailed,
		NotifySent: bs.NotifySent, NotifyFailed: bs.NotifyFailed, LastTransfer: map[string]time.Time{}}
	for _, sec := range bs.Secondaries {
		if !sec.LastTransfer.IsZero() {
			m.LastTransfer[sec.Addr.String()] = sec.LastTransfer
		}
	}
	return m
}
