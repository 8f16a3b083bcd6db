package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/actions/accessmap"
	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/firewall"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/pipeline"
	"github.com/mxguard/mxguard/internal/tailer"
	"github.com/mxguard/mxguard/smtpguard"
)

func runDaemon(e *env, args []string) error {
	fs := newFlagSet(e, "daemon", "",
		"Tail the configured logs, detect abusive clients and ban them.\n"+
			"SIGHUP reloads detectors, allowlist and log_level; SIGTERM/SIGINT stop cleanly.")
	cfgPath := fs.String("config", "", "config file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	dryRun := fs.Bool("dry-run", false, "log would-be bans; touch neither the block list nor the firewall")
	cleanup := fs.Bool("cleanup", false, "on shutdown remove the firewall chain and sets (bans stay in the block list and are restored at the next start)")
	if err := parseFlagsOnly(e, fs, args); err != nil {
		return err
	}
	cfg, path, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *dryRun {
		cfg.DryRun = true
	}
	return runUntilSignal(cfg, daemonOptions{configPath: path, cleanup: *cleanup, logOut: e.stderr})
}

// loadConfig loads the config named by --config (or the default path if
// it exists, or the built-in defaults); a bad file is a configError.
func loadConfig(flagValue string) (*config.Config, string, error) {
	path := config.Find(flagValue)
	cfg, err := config.Load(path)
	if err != nil {
		return nil, path, &configError{err}
	}
	return cfg, path, nil
}

// runUntilSignal runs the daemon until SIGTERM or SIGINT; SIGHUP reloads.
func runUntilSignal(cfg *config.Config, opts daemonOptions) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go forwardSignal(ctx, hup, reload)
	opts.reload = reload
	return daemonMain(ctx, cfg, opts)
}

// forwardSignal turns signals into non-blocking reload requests.
func forwardSignal(ctx context.Context, sig <-chan os.Signal, reload chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}
}

// daemonOptions are the wiring of one daemon run (tests set the extras).
type daemonOptions struct {
	configPath string
	cleanup    bool
	logOut     io.Writer
	reload     <-chan struct{}
	ready      func(d *daemon)   // called once everything is up
	sweep      time.Duration     // manager sweep interval (0 = default)
	noHostAddr bool              // do not allowlist the host's own addresses (tests)
	guard      *smtpguard.Config // run the guard with this config (mxguard guard); nil: as configured
}

// daemon is one running mxguard daemon.
type daemon struct {
	opts     daemonOptions
	cfg      atomic.Pointer[config.Config]
	log      *slog.Logger
	level    *slog.LevelVar
	store    *store.Store
	mgr      *ban.Manager
	pipe     *pipeline.Pipeline
	follower *tailer.Follower // nil when no logs are followed (guard only)
	guard    *smtpguard.Guard // nil when the guard is off
	snap     *banSnapshot     // the guard's view of the bans; nil when the guard is off
	guardErr chan error       // the guard's Serve failed (nil channel: no guard)
	ctl      *control.Server
	met      *metrics.Server
	started  time.Time
	rate     pipeline.Rate
	allow    atomic.Pointer[[]netip.Prefix]
	cleaners []interface {
		Name() string
		Cleanup(ctx context.Context) error
	}
}

func newLogger(cfg *config.Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(cfg.Level())
	ho := &slog.HandlerOptions{Level: lv}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho)), lv
	}
	return slog.New(slog.NewTextHandler(w, ho)), lv
}

// daemonMain runs the daemon until ctx is done.
func daemonMain(ctx context.Context, cfg *config.Config, opts daemonOptions) (err error) {
	if opts.logOut == nil {
		opts.logOut = io.Discard
	}
	d := &daemon{opts: opts, started: time.Now()}
	d.cfg.Store(cfg)
	d.log, d.level = newLogger(cfg, opts.logOut)
	d.setAllow(cfg)
	log := d.log

	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	d.store, err = store.Open(cfg.DBPath(), store.Options{Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("%w (is another mxguard daemon running with state_dir %s?)", err, cfg.StateDir)
	}
	defer func() {
		if cerr := d.store.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	acts, err := d.buildActions(cfg)
	if err != nil {
		return err
	}
	sources := []func() ([]netip.Prefix, error){d.allowSource}
	if !opts.noHostAddr {
		sources = append(sources, ban.HostAddrs)
	}
	d.mgr, err = ban.NewManager(ban.ManagerConfig{
		Ban: cfg.Ban, DryRun: cfg.DryRun, AllowSources: sources, SweepInterval: opts.sweep,
	}, d.store, acts, log)
	if err != nil {
		for _, a := range acts {
			a.Close()
		}
		return err
	}
	defer func() {
		if cerr := d.mgr.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if opts.cleanup {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, c := range d.cleaners {
				if cerr := c.Cleanup(cctx); cerr != nil {
					err = errors.Join(err, fmt.Errorf("cleanup %s: %w", c.Name(), cerr))
				} else {
					log.Info("removed firewall rules", "action", c.Name())
				}
			}
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	if rerr := d.mgr.Restore(rctx); rerr != nil {
		log.Warn("restore of active bans incomplete; retrying in the background", "err", rerr)
	}
	cancel()

	det, err := detectors.New(cfg.Detectors, log)
	if err != nil {
		return &configError{err}
	}
	gcfg := opts.guard
	if gcfg == nil {
		g, err := guardConfig(cfg)
		if err != nil {
			return &configError{err}
		}
		if g.Enabled {
			gcfg = &g
		}
	}
	var dec pipeline.Decider = d.mgr
	if gcfg != nil {
		d.snap = newBanSnapshot(d.mgr)
		dec = refreshingDecider{Manager: d.mgr, snap: d.snap}
	}
	d.pipe = pipeline.New(det, dec, log)

	if len(cfg.Logs) > 0 {
		cp, err := tailer.NewBoltCheckpoints(d.store.DB())
		if err != nil {
			return err
		}
		d.follower, err = tailer.New(tailer.Config{
			Paths: cfg.Logs, Poll: cfg.Tail.Poll, FromStart: !cfg.Tail.FromEnd,
			CheckpointEvery: cfg.Tail.CheckpointInterval.D(), Logger: log,
		}, cp)
		if err != nil {
			return err
		}
	} else if gcfg == nil {
		return &configError{errors.New("nothing to do: logs is empty and the guard is off (guard.enabled)")}
	}

	d.ctl, err = control.Listen(cfg.ControlSocket, d.handle, log)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer d.ctl.Close()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := d.ctl.Serve(runCtx); err != nil {
			log.Error("control socket", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		_ = d.mgr.Run(runCtx)
	}()

	if cfg.MetricsListen != "" {
		d.met, err = metrics.Listen(cfg.MetricsListen, d.metrics, log)
		if err != nil {
			return err
		}
		defer d.met.Close()
	}

	if gcfg != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.snap.run(runCtx)
		}()
		if d.guard, err = d.startGuard(runCtx, *gcfg, d.snap, &wg); err != nil {
			return err
		}
	}

	followErr := make(chan error, 1)
	if d.follower != nil {
		go func() { followErr <- d.pipe.Follow(runCtx, d.follower, cfg.Tail.Location()) }()
	} else {
		go func() { <-runCtx.Done(); followErr <- nil }()
	}
	guardListen := ""
	if gcfg != nil {
		guardListen = gcfg.Listen
	}
	log.Info("mxguard daemon started", "config", cfg.Path, "logs", cfg.Logs, "dry_run", cfg.DryRun,
		"control_socket", cfg.ControlSocket, "metrics_listen", cfg.MetricsListen, "actions", len(acts),
		"guard", guardListen)
	if opts.ready != nil {
		opts.ready(d)
	}
	for {
		select {
		case <-ctx.Done():
			stopRun()
			ferr := <-followErr
			log.Info("mxguard daemon stopping", "lines", d.pipe.Stats().Lines)
			return ferr
		case ferr := <-followErr:
			if ferr == nil {
				ferr = errors.New("log follower stopped")
			}
			return fmt.Errorf("follow logs: %w", ferr)
		case gerr := <-d.guardErr:
			// without its listener the guard protects nothing: stop, so
			// that systemd restarts us (Restart=on-failure)
			stopRun()
			<-followErr
			return fmt.Errorf("guard: %w", gerr)
		case <-opts.reload:
			d.reload()
		}
	}
}

// buildActions creates the enabled firewall and map actions. In dry-run
// they are printers: each would-be ban shows the exact iptables, ipset
// and postmap commands and map lines on the log output, and nothing runs.
func (d *daemon) buildActions(cfg *config.Config) ([]ban.Action, error) {
	var dry io.Writer
	if cfg.DryRun {
		dry = d.opts.logOut
	}
	var acts []ban.Action
	if c := cfg.Actions.IPTables; c.Enabled {
		a, err := firewall.NewIPTables(c, firewall.IPTablesOptions{Logger: d.log, DryRun: dry})
		if err != nil {
			return nil, fmt.Errorf("actions.iptables: %w", err)
		}
		acts = append(acts, a)
		d.cleaners = append(d.cleaners, a)
	}
	if c := cfg.Actions.IPSet; c.Enabled {
		a, err := firewall.NewIPSet(c, firewall.IPSetOptions{Logger: d.log, DryRun: dry})
		if err != nil {
			return nil, fmt.Errorf("actions.ipset: %w", err)
		}
		acts = append(acts, a)
		d.cleaners = append(d.cleaners, a)
	}
	if c := cfg.Actions.PostfixAccess; c.Enabled {
		a, err := accessmap.New(c, accessmap.Options{Logger: d.log, DryRun: dry})
		if err != nil {
			return nil, fmt.Errorf("actions.postfix_access: %w", err)
		}
		acts = append(acts, a)
	}
	return acts, nil
}

func (d *daemon) setAllow(cfg *config.Config) {
	ps := make([]netip.Prefix, 0, len(cfg.Allowlist))
	for _, s := range cfg.Allowlist {
		if p, err := ban.ParseAllowEntry(s); err == nil {
			ps = append(ps, p)
		}
	}
	d.allow.Store(&ps)
}

// allowSource feeds the configured allowlist to the manager's allowlist as
// a dynamic source, so that a reload can change it.
func (d *daemon) allowSource() ([]netip.Prefix, error) {
	if p := d.allow.Load(); p != nil {
		return *p, nil
	}
	return nil, nil
}

// reload re-reads the config file: detectors, allowlist and log_level take
// effect at once; other changes are reported as needing a restart.
func (d *daemon) reload() {
	old := d.cfg.Load()
	cfg, err := config.Load(d.opts.configPath)
	if err != nil {
		d.log.Error("reload failed; keeping the running configuration", "err", err)
		return
	}
	cfg.DryRun = old.DryRun // --dry-run survives a reload
	if !reflect.DeepEqual(cfg.Detectors, old.Detectors) {
		det, err := detectors.New(cfg.Detectors, d.log)
		if err != nil {
			d.log.Error("reload failed; keeping the running configuration", "err", err)
			return
		}
		d.pipe.SetDetectors(det)
		d.log.Info("reload: detectors replaced (their sliding windows start empty)")
	}
	d.setAllow(cfg)
	// Recheck refreshes the allowlist and lifts bans it now covers.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if n, err := d.mgr.Recheck(ctx); err != nil {
		d.log.Warn("reload: recheck of active bans", "err", err)
	} else if n > 0 {
		d.log.Info("reload: lifted bans the new allowlist or prefix limits no longer allow", "count", n)
		if d.snap != nil {
			d.snap.refresh()
		}
	}
	cancel()
	d.level.Set(cfg.Level())
	var restart []string
	for _, k := range []struct {
		key  string
		a, b any
	}{
		{"logs", old.Logs, cfg.Logs}, {"state_dir", old.StateDir, cfg.StateDir},
		{"control_socket", old.ControlSocket, cfg.ControlSocket}, {"ban", old.Ban, cfg.Ban},
		{"actions", old.Actions, cfg.Actions}, {"metrics_listen", old.MetricsListen, cfg.MetricsListen},
		{"log_format", old.LogFormat, cfg.LogFormat}, {"tail", old.Tail, cfg.Tail},
		{"guard", decodedGuard(old), decodedGuard(cfg)},
	} {
		if !reflect.DeepEqual(k.a, k.b) {
			restart = append(restart, k.key)
		}
	}
	// Keep the running values of what was not applied, so that status
	// shows what is in force.
	cfg.Logs, cfg.StateDir, cfg.ControlSocket, cfg.Ban = old.Logs, old.StateDir, old.ControlSocket, old.Ban
	cfg.Actions, cfg.MetricsListen, cfg.LogFormat, cfg.Tail = old.Actions, old.MetricsListen, old.LogFormat, old.Tail
	cfg.Guard = old.Guard
	d.cfg.Store(cfg)
	if len(restart) > 0 {
		d.log.Warn("reload: these changes need a restart", "keys", restart)
	}
	d.log.Info("configuration reloaded", "config", cfg.Path)
}

// decodedGuard compares guard sections by content, not by YAML position.
func decodedGuard(cfg *config.Config) any {
	g, err := guardConfig(cfg)
	if err != nil {
		return err.Error()
	}
	return g
}

// daemonStatus is the reply to the status command.
type daemonStatus struct {
	PID         int                `json:"pid"`
	Started     time.Time          `json:"started"`
	Uptime      string             `json:"uptime"`
	Config      string             `json:"config"`
	DryRun      bool               `json:"dry_run"`
	Files       []tailer.FileStats `json:"files"`
	LinesPerSec float64            `json:"lines_per_sec"`
	Pipeline    pipeline.Stats     `json:"pipeline"`
	Manager     ban.ManagerStatus  `json:"manager"`
	Guard       *smtpguard.Stats   `json:"guard,omitempty"`
}

func (d *daemon) status() (daemonStatus, error) {
	ms, err := d.mgr.Status()
	if err != nil {
		return daemonStatus{}, err
	}
	ps := d.pipe.Stats()
	now := time.Now()
	cfg := d.cfg.Load()
	lps := d.rate.Update(now, ps.Lines)
	if up := now.Sub(d.started).Seconds(); lps == 0 && up > 0 {
		lps = float64(ps.Lines) / up // no earlier sample yet: the average since start
	}
	st := daemonStatus{
		PID: os.Getpid(), Started: d.started, Uptime: now.Sub(d.started).Round(time.Second).String(),
		Config: cfg.Path, DryRun: cfg.DryRun, LinesPerSec: lps, Pipeline: ps, Manager: ms,
	}
	if d.follower != nil {
		st.Files = d.follower.Stats().Files
	}
	if d.guard != nil {
		gs := d.guard.Stats()
		st.Guard = &gs
	}
	return st, nil
}

func (d *daemon) metrics() metrics.Snapshot {
	ps := d.pipe.Stats()
	s := metrics.Snapshot{
		Lines: ps.Lines, EventsByKind: ps.Kinds, Decisions: ps.Decisions, Bans: ps.Bans,
		ParseSkipped: map[string]uint64{"not_postfix": ps.NotPostfix, "unrecognized": ps.Unrecognized, "too_long": ps.TooLong},
		TailLagBytes: map[string]int64{}, ActionFailures: map[string]uint64{}, ActionPending: map[string]int{},
	}
	if d.follower != nil {
		for _, f := range d.follower.Stats().Files {
			s.TailLagBytes[f.Path] = f.Lag
		}
	}
	if ms, err := d.mgr.Status(); err == nil {
		s.ActiveBans = ms.ActiveBans + ms.DryRunBans
		for _, a := range ms.Actions {
			s.ActionFailures[a.Name] = a.Failures
			s.ActionPending[a.Name] = a.Pending
		}
	}
	return s
}

// parseBanDuration reads a ban's --for: the config's duration syntax
// (internal/duration, "30m", "12h", "7d", at most duration.Max); "" means
// the escalation schedule, so 0 is refused rather than taken for it.
func parseBanDuration(s string) (time.Duration, error) {
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

// handle answers the control socket.
func (d *daemon) handle(ctx context.Context, req control.Request) (any, error) {
	switch req.Cmd {
	case control.CmdBan:
		p, err := ban.ParsePrefix(req.IP)
		if err != nil {
			return nil, err
		}
		dur, err := parseBanDuration(req.For)
		if err != nil {
			return nil, err
		}
		b, err := d.mgr.Ban(ctx, p, dur, req.Reason)
		if err == nil && d.snap != nil {
			d.snap.add(b)
		}
		return b, err
	case control.CmdUnban:
		p, err := ban.ParsePrefix(req.IP)
		if err != nil {
			return nil, err
		}
		found, err := d.mgr.Unban(ctx, p)
		if err != nil {
			return nil, err
		}
		if d.snap != nil {
			d.snap.remove(p)
		}
		return unbanResult{IP: p, Removed: found}, nil
	case control.CmdList:
		return d.mgr.List(time.Now())
	case control.CmdExplain:
		p, err := ban.ParsePrefix(req.IP)
		if err != nil {
			return nil, err
		}
		return d.mgr.Explain(p)
	case control.CmdStatus:
		return d.status()
	default:
		return nil, fmt.Errorf("unknown command %q (want ban, unban, list, explain or status)", req.Cmd)
	}
}

type unbanResult struct {
	IP      netip.Prefix `json:"ip"`
	Removed bool         `json:"removed"`
}
