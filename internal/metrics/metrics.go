// Package metrics serves the daemon's counters to Prometheus. Values are
// read from a snapshot function at scrape time (no double bookkeeping), on
// a registry of our own (never the global default one).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is what one scrape reports.
type Snapshot struct {
	Lines          uint64            // lines read
	EventsByKind   map[string]uint64 // events by kind
	ParseSkipped   map[string]uint64 // lines without an event, by reason (not_postfix, unrecognized, context, too_long)
	Decisions      map[string]uint64 // detector decisions, by detector
	Bans           map[string]uint64 // decisions that banned or extended, by detector
	ActiveBans     int
	TailLagBytes   map[string]int64  // unread bytes, by configured log path
	ActionFailures map[string]uint64 // failed action calls, by action
	ActionPending  map[string]int    // queued action calls, by action
	Guard          *GuardSnapshot    // nil when the inline guard does not run
	FutureLines    uint64            // lines stamped too far ahead of the clock (dated now)

	// A store that refuses writes (a full state_dir): see ban.PersistStatus
	// and pipeline.Stats.
	PersistPending       int    // bans in force kept in memory until the store takes writes
	PersistFailures      uint64 // store writes refused
	PersistDropped       uint64 // decisions refused because the persist queue was full
	DecisionsNotRecorded uint64 // decisions neither recorded nor queued (decided again later)
	CheckpointHeldPaths  int    // logs whose checkpoint is held for such decisions

	Peers []PeerSnapshot // followed peers' zones (internal/peers)

	Policy *PolicySnapshot // nil when the policy service does not run
	DNSBL  *DNSBLSnapshot  // nil when publish.dnsbl is off
}

// PolicySnapshot is the policy service's part of a scrape (policy.Stats).
type PolicySnapshot struct {
	Connections uint64            // accepted
	Active      int64             // open now
	Closed      map[string]uint64 // closed by the service, by reason (refused, denied, bad_request, timeout, error)
	Requests    uint64            // answered
	Hits        map[string]uint64 // requests a check acted on, by check
}

// DNSBLSnapshot is the DNSBL publisher's part of a scrape (dnsbl.Stats).
type DNSBLSnapshot struct {
	Serial           uint32
	Listings         int
	Answers          map[string]uint64 // single-message replies, by rcode name
	RateLimited      uint64            // UDP queries dropped by the rate limit
	Transfers        map[string]uint64 // served, by kind (axfr, ixfr)
	TransfersRefused uint64
	TransfersFailed  uint64
	NotifySent       uint64
	NotifyFailed     uint64
	LastTransfer     map[string]time.Time // by secondary address; only those that transferred
}

// PeerSnapshot is one followed peer's part of a scrape.
type PeerSnapshot struct {
	Name         string
	Serial       uint32
	Entries      int            // listings mirrored (in force here)
	Skipped      map[string]int // names of the current zone not mirrored, by reason
	Failures     uint64         // failed checks (transfer or mirror)
	LastTransfer time.Time      // zero before the first
}

// GuardSnapshot is the inline SMTP guard's part of a scrape.
type GuardSnapshot struct {
	BannedSessions uint64 // live sessions ended because their client was banned
	Stress         bool   // under stress now
	StressEpisodes uint64 // times stress began
}

var (
	dLines    = prometheus.NewDesc("mxguard_lines_read_total", "Log lines read.", nil, nil)
	dEvents   = prometheus.NewDesc("mxguard_events_total", "Events handled (log lines and guard sessions), by kind.", []string{"kind"}, nil)
	dSkipped  = prometheus.NewDesc("mxguard_parse_skipped_total", "Lines that produced no event, by reason.", []string{"reason"}, nil)
	dDecide   = prometheus.NewDesc("mxguard_decisions_total", "Detector decisions, by detector.", []string{"detector"}, nil)
	dBans     = prometheus.NewDesc("mxguard_bans_total", "Decisions that made or extended a ban, by detector.", []string{"detector"}, nil)
	dActive   = prometheus.NewDesc("mxguard_active_bans", "Bans in force.", nil, nil)
	dLag      = prometheus.NewDesc("mxguard_tail_lag_bytes", "Bytes written to a log and not yet read.", []string{"path"}, nil)
	dFailures = prometheus.NewDesc("mxguard_action_failures_total", "Failed action calls, by action.", []string{"action"}, nil)
	dPending  = prometheus.NewDesc("mxguard_action_pending", "Action calls queued or being retried, by action.", []string{"action"}, nil)
	dGBanned  = prometheus.NewDesc("mxguard_guard_banned_sessions_total", "Live guard sessions ended because their client was banned.", nil, nil)
	dGStress  = prometheus.NewDesc("mxguard_guard_stress", "1 while the guard is under stress (shorter timeouts).", nil, nil)
	dGEpisode = prometheus.NewDesc("mxguard_guard_stress_episodes_total", "Times the guard came under stress.", nil, nil)

	dPersistPending  = prometheus.NewDesc("mxguard_ban_persist_pending", "Bans in force that the store refused to write, kept in memory and retried.", nil, nil)
	dPersistFailures = prometheus.NewDesc("mxguard_ban_persist_failures_total", "Ban store writes refused (a full state_dir).", nil, nil)
	dPersistDropped  = prometheus.NewDesc("mxguard_ban_persist_dropped_total", "Decisions refused because the persist queue was full.", nil, nil)
	dNotRecorded     = prometheus.NewDesc("mxguard_decisions_not_recorded_total", "Decisions neither recorded nor queued; the detector decides them again.", nil, nil)
	dHeldPaths       = prometheus.NewDesc("mxguard_checkpoint_held_paths", "Logs whose checkpoint is held back for decisions not recorded.", nil, nil)
	dFuture          = prometheus.NewDesc("mxguard_future_lines_total", "Log lines stamped more than the tolerance ahead of the clock (their events dated now).", nil, nil)

	dPeerSerial   = prometheus.NewDesc("mxguard_peer_zone_serial", "Serial of the peer's zone held.", []string{"peer"}, nil)
	dPeerEntries  = prometheus.NewDesc("mxguard_peer_mirrored_bans", "Listings of the peer's zone mirrored as bans.", []string{"peer"}, nil)
	dPeerSkipped  = prometheus.NewDesc("mxguard_peer_skipped_names", "Names of the peer's zone not mirrored, by reason.", []string{"peer", "reason"}, nil)
	dPeerFailures = prometheus.NewDesc("mxguard_peer_check_failures_total", "Failed transfers or checks of the peer's zone.", []string{"peer"}, nil)
	dPeerLast     = prometheus.NewDesc("mxguard_peer_last_transfer_timestamp_seconds", "Unix time of the last transfer that changed the peer's zone.", []string{"peer"}, nil)

	dPolConns    = prometheus.NewDesc("mxguard_policy_connections_total", "Connections the policy service accepted.", nil, nil)
	dPolActive   = prometheus.NewDesc("mxguard_policy_connections_active", "Policy service connections open now.", nil, nil)
	dPolClosed   = prometheus.NewDesc("mxguard_policy_connections_closed_total", "Policy service connections it closed, by reason (refused: max_connections, denied: peer not allowed, bad_request, timeout, error).", []string{"reason"}, nil)
	dPolRequests = prometheus.NewDesc("mxguard_policy_requests_total", "Policy requests answered.", nil, nil)
	dPolHits     = prometheus.NewDesc("mxguard_policy_hits_total", "Policy requests a check acted on, by check.", []string{"check"}, nil)

	dBLSerial     = prometheus.NewDesc("mxguard_dnsbl_zone_serial", "Serial of the published DNSBL zone.", nil, nil)
	dBLListings   = prometheus.NewDesc("mxguard_dnsbl_listings", "Listings in the published zone (the RFC 5782 test entries included).", nil, nil)
	dBLAnswers    = prometheus.NewDesc("mxguard_dnsbl_answers_total", "Single-message DNS replies (queries, transfer requests refused or up to date), by rcode.", []string{"rcode"}, nil)
	dBLRate       = prometheus.NewDesc("mxguard_dnsbl_rate_limited_total", "UDP queries dropped by the rate limit.", nil, nil)
	dBLXfr        = prometheus.NewDesc("mxguard_dnsbl_transfers_total", "Zone transfers served, by kind.", []string{"kind"}, nil)
	dBLXfrRefused = prometheus.NewDesc("mxguard_dnsbl_transfers_refused_total", "Zone transfers refused (not a secondary, or not signed with the key).", nil, nil)
	dBLXfrFailed  = prometheus.NewDesc("mxguard_dnsbl_transfers_failed_total", "Zone transfers broken off while streaming.", nil, nil)
	dBLNotify     = prometheus.NewDesc("mxguard_dnsbl_notifies_total", "NOTIFYs to secondaries, by result (sent: acknowledged, failed).", []string{"result"}, nil)
	dBLSecLast    = prometheus.NewDesc("mxguard_dnsbl_secondary_last_transfer_timestamp_seconds", "Unix time of the secondary's last transfer from us.", []string{"secondary"}, nil)
)

type collector struct{ snap func() Snapshot }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dLines, dEvents, dSkipped, dDecide, dBans, dActive, dLag, dFailures, dPending,
		dGBanned, dGStress, dGEpisode, dPersistPending, dPersistFailures, dPersistDropped, dNotRecorded, dHeldPaths, dFuture,
		dPeerSerial, dPeerEntries, dPeerSkipped, dPeerFailures, dPeerLast,
		dPolConns, dPolActive, dPolClosed, dPolRequests, dPolHits,
		dBLSerial, dBLListings, dBLAnswers, dBLRate, dBLXfr, dBLXfrRefused, dBLXfrFailed, dBLNotify, dBLSecLast} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	ch <- prometheus.MustNewConstMetric(dLines, prometheus.CounterValue, float64(s.Lines))
	for k, v := range s.EventsByKind {
		ch <- prometheus.MustNewConstMetric(dEvents, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range s.ParseSkipped {
		ch <- prometheus.MustNewConstMetric(dSkipped, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range s.Decisions {
		ch <- prometheus.MustNewConstMetric(dDecide, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range s.Bans {
		ch <- prometheus.MustNewConstMetric(dBans, prometheus.CounterValue, float64(v), k)
	}
	ch <- prometheus.MustNewConstMetric(dActive, prometheus.GaugeValue, float64(s.ActiveBans))
	ch <- prometheus.MustNewConstMetric(dFuture, prometheus.CounterValue, float64(s.FutureLines))
	for k, v := range s.TailLagBytes {
		ch <- prometheus.MustNewConstMetric(dLag, prometheus.GaugeValue, float64(v), k)
	}
	for k, v := range s.ActionFailures {
		ch <- prometheus.MustNewConstMetric(dFailures, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range s.ActionPending {
		ch <- prometheus.MustNewConstMetric(dPending, prometheus.GaugeValue, float64(v), k)
	}
	if g := s.Guard; g != nil {
		stress := 0.0
		if g.Stress {
			stress = 1
		}
		ch <- prometheus.MustNewConstMetric(dGBanned, prometheus.CounterValue, float64(g.BannedSessions))
		ch <- prometheus.MustNewConstMetric(dGStress, prometheus.GaugeValue, stress)
		ch <- prometheus.MustNewConstMetric(dGEpisode, prometheus.CounterValue, float64(g.StressEpisodes))
	}
	ch <- prometheus.MustNewConstMetric(dPersistPending, prometheus.GaugeValue, float64(s.PersistPending))
	ch <- prometheus.MustNewConstMetric(dPersistFailures, prometheus.CounterValue, float64(s.PersistFailures))
	ch <- prometheus.MustNewConstMetric(dPersistDropped, prometheus.CounterValue, float64(s.PersistDropped))
	ch <- prometheus.MustNewConstMetric(dNotRecorded, prometheus.CounterValue, float64(s.DecisionsNotRecorded))
	ch <- prometheus.MustNewConstMetric(dHeldPaths, prometheus.GaugeValue, float64(s.CheckpointHeldPaths))
	for _, p := range s.Peers {
		ch <- prometheus.MustNewConstMetric(dPeerSerial, prometheus.GaugeValue, float64(p.Serial), p.Name)
		ch <- prometheus.MustNewConstMetric(dPeerEntries, prometheus.GaugeValue, float64(p.Entries), p.Name)
		for k, v := range p.Skipped {
			ch <- prometheus.MustNewConstMetric(dPeerSkipped, prometheus.GaugeValue, float64(v), p.Name, k)
		}
		ch <- prometheus.MustNewConstMetric(dPeerFailures, prometheus.CounterValue, float64(p.Failures), p.Name)
		if !p.LastTransfer.IsZero() {
			ch <- prometheus.MustNewConstMetric(dPeerLast, prometheus.GaugeValue, float64(p.LastTransfer.Unix()), p.Name)
		}
	}
	if p := s.Policy; p != nil {
		ch <- prometheus.MustNewConstMetric(dPolConns, prometheus.CounterValue, float64(p.Connections))
		ch <- prometheus.MustNewConstMetric(dPolActive, prometheus.GaugeValue, float64(p.Active))
		for k, v := range p.Closed {
			ch <- prometheus.MustNewConstMetric(dPolClosed, prometheus.CounterValue, float64(v), k)
		}
		ch <- prometheus.MustNewConstMetric(dPolRequests, prometheus.CounterValue, float64(p.Requests))
		for k, v := range p.Hits {
			ch <- prometheus.MustNewConstMetric(dPolHits, prometheus.CounterValue, float64(v), k)
		}
	}
	if b := s.DNSBL; b != nil {
		ch <- prometheus.MustNewConstMetric(dBLSerial, prometheus.GaugeValue, float64(b.Serial))
		ch <- prometheus.MustNewConstMetric(dBLListings, prometheus.GaugeValue, float64(b.Listings))
		for k, v := range b.Answers {
			ch <- prometheus.MustNewConstMetric(dBLAnswers, prometheus.CounterValue, float64(v), k)
		}
		ch <- prometheus.MustNewConstMetric(dBLRate, prometheus.CounterValue, float64(b.RateLimited))
		for k, v := range b.Transfers {
			ch <- prometheus.MustNewConstMetric(dBLXfr, prometheus.CounterValue, float64(v), k)
		}
		ch <- prometheus.MustNewConstMetric(dBLXfrRefused, prometheus.CounterValue, float64(b.TransfersRefused))
		ch <- prometheus.MustNewConstMetric(dBLXfrFailed, prometheus.CounterValue, float64(b.TransfersFailed))
		ch <- prometheus.MustNewConstMetric(dBLNotify, prometheus.CounterValue, float64(b.NotifySent), "sent")
		ch <- prometheus.MustNewConstMetric(dBLNotify, prometheus.CounterValue, float64(b.NotifyFailed), "failed")
		for k, v := range b.LastTransfer {
			ch <- prometheus.MustNewConstMetric(dBLSecLast, prometheus.GaugeValue, float64(v.Unix()), k)
		}
	}
}

// Registry returns a new registry with the mxguard collector plus the Go
// runtime and process collectors.
func Registry(snap func() Snapshot) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collector{snap}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves the registry (GET /metrics).
func Handler(r *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/" {
			http.NotFound(w, req)
			return
		}
		fmt.Fprintln(w, "mxguard: metrics at /metrics")
	})
	return mux
}

// Server is a running metrics endpoint.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr (host:port) now, so that a bad address fails the
// daemon's start, and serves in the background.
func Listen(addr string, snap func() Snapshot, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           Handler(Registry(snap)),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics endpoint stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the endpoint.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
