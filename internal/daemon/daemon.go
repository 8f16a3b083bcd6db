// Package daemon is the running mxguard: it follows the mail logs and,
// when enabled, the inline SMTP guard, feeds their events through the
// detectors to the ban Manager, and answers the control socket.
//
// One run goes through five phases, one method each:
//
//	open      state_dir, bbolt store
//	build     actions, manager, detectors, pipeline, log follower, guard
//	start     restore of the active bans into the actions (in the
//	          background), control socket, metrics, manager loop, guard,
//	          follower
//	loop      until stopped (SIGTERM, SIGINT, ctx); SIGHUP reloads
//	shutdown  stop, close manager and store; with Options.Cleanup remove
//	          the firewall chains and sets
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/dnsbl"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/pipeline"
	"github.com/mxguard/mxguard/internal/policy"
	"github.com/mxguard/mxguard/internal/tailer"
	"github.com/mxguard/mxguard/smtpguard"
)

// Options are what the command line adds to the configuration.
type Options struct {
	// ConfigPath is the file a reload reads again ("" = built-in defaults).
	ConfigPath string
	// DryRun forces dry-run whatever dry_run says (--dry-run), also
	// across reloads.
	DryRun bool
	// Cleanup removes the firewall chains and sets at shutdown; the bans
	// stay in the block list and are restored at the next start.
	Cleanup bool
	// Guard runs the inline SMTP guard with this configuration whatever
	// guard.enabled says (`mxguard guard`); nil: as configured.
	Guard *smtpguard.Config
	// LogOutput receives the daemon's log (nil: discarded).
	LogOutput io.Writer
	// Ready is called once everything is up, on the daemon's goroutine:
	// it must not block.
	Ready func(*Daemon)

	noHostAddrs  bool         // tests: do not allowlist the host's own addresses
	extraActions []ban.Action // tests: actions besides the configured ones
	// controlLimits, when set, replace the control socket's default
	// limits (tests).
	controlLimits control.Limits
}

// ConfigError is a configuration the daemon cannot run with (the command
// line exits 2 for it), as opposed to a failure while running.
type ConfigError struct{ Err error }

func (c *ConfigError) Error() string { return c.Err.Error() }
func (c *ConfigError) Unwrap() error { return c.Err }

// Daemon is one running mxguard daemon.
type Daemon struct {
	opts    Options
	cfg     atomic.Pointer[config.Config] // in force: what a reload changed, and the rest as started
	log     *slog.Logger
	level   *slog.LevelVar
	started time.Time
	rate    pipeline.Rate
	allow   atomic.Pointer[[]netip.Prefix]

	store    *store.Store
	acts     []ban.Action
	cleaners []cleaner
	mgr      *ban.Manager
	pipe     *pipeline.Pipeline
	follower *tailer.Follower  // the log files; nil when none are followed
	sources  *logSources       // files and journal; nil when no logs are followed (guard only)
	guardCfg *smtpguard.Config // nil when the guard is off
	guard    *smtpguard.Guard  // nil when the guard is off
	peers    *peers.Set        // nil when no peers are followed
	ctl      *control.Server
	met      *metrics.Server
	restore  atomic.Pointer[RestoreStatus]
	dnsbl    *dnsbl.Publisher // publish.dnsbl; nil when off (one of acts)

	runCtx       context.Context // cancelled at shutdown; set by start
	stopRun      context.CancelFunc
	wg           sync.WaitGroup
	guardServing bool
	guardErr     chan error // the guard's Serve failed (nil channel: no guard)
	followErr    chan error // the follower stopped (nil channel: no follower)

	// The policy service (nil when off) and the greylist store the daemon
	// opened for guard and policy both (nil unless both greylist).
	policyCfg     *policy.Config
	policy        *policy.Server
	sharedGrey    *greylist.Store
	policyServing bool
	policyErr     chan error // its Serve failed (nil channel: no policy service)
}

// cleaner is an action that can remove what it put into the firewall.
type cleaner interface {
	Name() string
	Cleanup(ctx context.Context) error
}

// Run runs the daemon until ctx is done or SIGTERM or SIGINT arrives;
// SIGHUP reloads the configuration (see Daemon.reload).
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// A buffer of one coalesces a burst of SIGHUPs into one reload.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return run(ctx, cfg, opts, hup)
}

// run is Run with the reload requests given: each value on reload is one.
func run(ctx context.Context, cfg *config.Config, opts Options, reload <-chan os.Signal) (err error) {
	d, err := open(cfg, opts)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.shutdown()) }()
	if err := d.build(ctx); err != nil {
		return err
	}
	if err := d.start(ctx); err != nil {
		return err
	}
	return d.loop(ctx, reload)
}

// open creates the state directory and opens the block list. Only one
// daemon may hold it.
func open(cfg *config.Config, opts Options) (*Daemon, error) {
	if opts.LogOutput == nil {
		opts.LogOutput = io.Discard
	}
	running := *cfg
	running.DryRun = cfg.DryRun || opts.DryRun
	d := &Daemon{opts: opts, started: time.Now()}
	d.cfg.Store(&running)
	d.log, d.level = newLogger(&running, opts.LogOutput)
	for _, w := range running.Warnings() {
		d.log.Warn("config: " + w)
	}
	d.setAllow(&running)

	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	open := store.Open
	if running.DryRun {
		// A dry run touches nothing: it works on a private copy of the
		// block list (its would-be bans are only in memory anyway), so
		// neither a schema migration nor the read positions it saves
		// reach the real file.
		// The copy goes beside the real file, not to a /tmp that may be a
		// small tmpfs.
		open = func(path string, o store.Options) (*store.Store, error) {
			return store.OpenCopy(path, filepath.Dir(path), o)
		}
	}
	st, err := open(cfg.DBPath(), store.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("%w (is another mxguard daemon running with state_dir %s?)", err, cfg.StateDir)
	}
	d.store = st
	return d, nil
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

// build makes everything that runs: actions, the manager, detectors,
// pipeline, follower and guard. Nothing listens yet.
func (d *Daemon) build(ctx context.Context) error {
	cfg := d.cfg.Load()
	var err error
	if d.acts, d.cleaners, err = buildActions(cfg, d.log, d.opts.LogOutput); err != nil {
		return err
	}
	d.acts = append(d.acts, d.opts.extraActions...)
	if d.dnsbl, err = d.buildDNSBL(cfg); err != nil {
		return err
	} else if d.dnsbl != nil {
		d.acts = append(d.acts, d.dnsbl)
	}
	sources := []func() ([]netip.Prefix, error){d.allowSource}
	if !d.opts.noHostAddrs {
		sources = append(sources, ban.HostAddrs)
	}
	bans := &committingStore{Store: d.store}
	d.mgr, err = ban.NewManager(ban.ManagerConfig{
		Ban: cfg.Ban, DryRun: cfg.DryRun, AllowSources: sources,
	}, bans, d.acts, d.log)
	if err != nil {
		return err
	}

	det, err := detectors.New(cfg.Detectors, d.log)
	if err != nil {
		return &ConfigError{err}
	}
	d.guardCfg = d.opts.Guard
	if g := cfg.GuardConfig(); d.guardCfg == nil && g.Enabled {
		d.guardCfg = &g
	}
	if p := cfg.PolicyConfig(); p.Enabled {
		d.policyCfg = &p
	}
	d.pipe = pipeline.New(det, &committingDecider{mgr: d.mgr, st: bans}, d.log)
	if len(cfg.Peers) > 0 {
		// the followers keep their zones in state_dir/peers; a dry run
		// writes nothing there, so it keeps none
		zones := filepath.Join(cfg.StateDir, "peers")
		if cfg.DryRun {
			zones = ""
		}
		d.peers = peers.NewSet(cfg.PeersConfig(), zones, d.mgr, d.log)
	}

	if len(cfg.Logs) > 0 {
		if d.sources, err = buildSources(cfg, d.store.DB(), d); err != nil {
			return err
		}
		d.follower, bans.follower = d.sources.files, d.sources
	} else if d.guardCfg == nil && d.policyCfg == nil && d.peers == nil {
		return &ConfigError{errors.New("nothing to do: logs is empty, the guard (guard.enabled) and the policy service (policy.enabled) are off, and no peers are followed")}
	}
	grey, res, err := d.sharedFrontDoorDeps()
	if err != nil {
		return err
	}
	d.sharedGrey = grey
	if d.guardCfg != nil {
		if err := d.buildGuard(grey, res); err != nil {
			return err
		}
	}
	if d.policyCfg != nil {
		return d.buildPolicy(grey, res)
	}
	return nil
}

// start starts the restore of the active bans (in the background), opens
// the control socket and the metrics endpoint and starts the manager loop,
// the guard and the follower.
func (d *Daemon) start(ctx context.Context) error {
	cfg := d.cfg.Load()
	d.runCtx, d.stopRun = context.WithCancel(ctx)
	var err error
	if d.dnsbl != nil {
		// Serving before the restore: its Sync fills the zone in one step.
		if err = d.dnsbl.Start(); err != nil {
			return err
		}
	}
	d.startRestore()
	if d.ctl, err = control.Listen(cfg.ControlSocket, d.handle, d.log); err != nil {
		return err
	}
	d.ctl.SetLimits(d.opts.controlLimits)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		if err := d.ctl.Serve(d.runCtx); err != nil {
			d.log.Error("control socket", "err", err)
		}
	}()
	go func() {
		defer d.wg.Done()
		_ = d.mgr.Run(d.runCtx)
	}()
	if cfg.MetricsListen != "" {
		if d.met, err = metrics.Listen(cfg.MetricsListen, d.metrics, d.log); err != nil {
			return err
		}
	}
	if d.guard != nil {
		if err := d.startGuard(); err != nil {
			return err
		}
	}
	if d.peers != nil {
		if err := d.peers.Start(d.runCtx); err != nil {
			return err
		}
	}
	if d.policy != nil {
		if err := d.startPolicy(); err != nil {
			return err
		}
	}
	if d.sources != nil {
		d.followErr = make(chan error, 1)
		go func() {
			// The detectors get their windows back before the log is
			// followed again; meanwhile the rest answers already.
			if err := d.pipe.Warm(d.runCtx, d.sources, cfg.Tail.Location()); err != nil && d.runCtx.Err() == nil {
				d.log.Warn("warm-up of the detectors incomplete", "err", err)
			}
			d.followErr <- d.pipe.Follow(d.runCtx, d.sources, cfg.Tail.Location())
		}()
	}
	guardListen := ""
	if d.guardCfg != nil {
		guardListen = d.guardCfg.Listen
	}
	policyListen := ""
	if d.policyCfg != nil {
		policyListen = d.policyCfg.Listen
	}
	d.log.Info("mxguard daemon started", "config", cfg.Path, "logs", cfg.Logs, "dry_run", cfg.DryRun,
		"control_socket", cfg.ControlSocket, "metrics_listen", cfg.MetricsListen, "actions", len(d.acts),
		"guard", guardListen, "policy", policyListen)
	if d.opts.Ready != nil {
		d.opts.Ready(d)
	}
	return nil
}

// loop runs until ctx is done or a part fails, reloading the
// configuration on each request from reload.
func (d *Daemon) loop(ctx context.Context, reload <-chan os.Signal) error {
	stopping := func() error {
		d.stopRun()
		var ferr error
		if d.followErr != nil {
			ferr = <-d.followErr
		}
		d.log.Info("mxguard daemon stopping", "lines", d.pipe.Stats().Lines)
		return ferr
	}
	for {
		select {
		case <-ctx.Done():
			return stopping()
		case ferr := <-d.followErr:
			if ctx.Err() != nil { // the follower saw the stop first
				d.followErr <- ferr
				return stopping()
			}
			if ferr == nil {
				ferr = errors.New("log follower stopped")
			}
			return fmt.Errorf("follow logs: %w", ferr)
		case gerr := <-d.guardErr:
			// without its listener the guard protects nothing: stop, so
			// that systemd restarts us (Restart=on-failure)
			_ = stopping()
			return fmt.Errorf("guard: %w", gerr)
		case perr := <-d.policyErr:
			_ = stopping()
			return fmt.Errorf("policy: %w", perr)
		case <-reload:
			d.reload()
		}
	}
}

// shutdown stops what start started and closes what open and build made,
// in reverse order; it copes with a run that failed half way.
func (d *Daemon) shutdown() error {
	if d.stopRun != nil {
		d.stopRun()
	}
	if d.met != nil {
		d.met.Close()
	}
	if d.ctl != nil {
		d.ctl.Close()
	}
	d.wg.Wait()
	if d.peers != nil {
		_ = d.peers.Close()
	}
	if d.guard != nil && !d.guardServing {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = d.guard.Shutdown(sctx) // closes the greylist database
		cancel()
	}
	if d.policy != nil && !d.policyServing {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = d.policy.Shutdown(sctx)
		cancel()
	}
	if d.sharedGrey != nil { // after both front doors stopped using it
		if err := d.sharedGrey.Close(); err != nil {
			d.log.Warn("greylist close", "err", err)
		}
	}
	var errs []error
	if d.mgr != nil {
		if err := d.mgr.Close(); err != nil {
			errs = append(errs, err)
		}
		if d.opts.Cleanup {
			errs = append(errs, d.cleanup())
		}
	} else {
		for _, a := range d.acts {
			a.Close()
		}
	}
	if err := d.store.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanup removes the firewall chains and sets (--cleanup).
func (d *Daemon) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, c := range d.cleaners {
		if err := c.Cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %s: %w", c.Name(), err))
		} else {
			d.log.Info("removed firewall rules", "action", c.Name())
		}
	}
	return errors.Join(errs...)
}

func (d *Daemon) setAllow(cfg *config.Config) {
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
func (d *Daemon) allowSource() ([]netip.Prefix, error) {
	if p := d.allow.Load(); p != nil {
		return *p, nil
	}
	return nil, nil
}
