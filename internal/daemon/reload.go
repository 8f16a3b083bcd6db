package daemon

import (
	"context"
	"reflect"
	"time"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/config"
)

// reload re-reads the config file: detectors, allowlist and log_level take
// effect at once; other changes (dry_run too) are logged as needing a
// restart, and the running values stay in force.
func (d *Daemon) reload() {
	old := d.cfg.Load()
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		d.log.Error("reload failed; keeping the running configuration", "err", err)
		return
	}
	fileDryRun := cfg.DryRun
	cfg.DryRun = old.DryRun
	if d.opts.DryRun && !fileDryRun {
		d.log.Info("reload: dry_run is false in the file; --dry-run keeps the daemon in dry-run")
	}
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
		{"guard", old.GuardConfig(), cfg.GuardConfig()}, {"publish", old.Publish, cfg.Publish},
		{"peers", old.Peers, cfg.Peers},
		// with --dry-run the flag decides, whatever the file says
		{"dry_run", old.DryRun, fileDryRun || d.opts.DryRun},
		{"policy", old.PolicyConfig(), cfg.PolicyConfig()},
	} {
		if !reflect.DeepEqual(k.a, k.b) {
			restart = append(restart, k.key)
		}
	}
	// Keep the running values of what was not applied, so that status
	// shows what is in force.
	cfg.Policy = old.Policy
	cfg.Logs, cfg.StateDir, cfg.ControlSocket, cfg.Ban = old.Logs, old.StateDir, old.ControlSocket, old.Ban
	cfg.Actions, cfg.MetricsListen, cfg.LogFormat, cfg.Tail = old.Actions, old.MetricsListen, old.LogFormat, old.Tail
	cfg.Guard, cfg.Publish, cfg.Peers = old.Guard, old.Publish, old.Peers
	d.cfg.Store(cfg)
	if len(restart) > 0 {
		d.log.Warn("reload: these changes need a restart", "keys", restart)
	}
	d.log.Info("configuration reloaded", "config", cfg.Path)
}
