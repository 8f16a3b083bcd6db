package main

import (
	"context"
	"errors"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/daemon"
)

func runDaemon(e *env, args []string) error {
	fs := newFlagSet(e, "daemon", "",
		"Tail the configured logs, detect abusive clients and ban them.\n"+
			"SIGHUP reloads detectors, allowlist and log_level and logs the other changed keys as needing a\n"+
			"restart; SIGTERM/SIGINT stop cleanly.")
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
	return runUntilSignal(cfg, daemon.Options{ConfigPath: path, DryRun: *dryRun, Cleanup: *cleanup, LogOutput: e.stderr})
}

// runGuard is `mxguard guard`: the daemon with the inline SMTP guard
// switched on, so the guard and the log tailer (when `logs` is not empty)
// feed one set of detectors and one block list.
func runGuard(e *env, args []string) error {
	fs := newFlagSet(e, "guard", "",
		"Run the inline SMTP guard in front of the MTA (and, when `logs` is set, the log tailer beside it).\n"+
			"Good clients are handed to the upstream with XCLIENT or the PROXY protocol; the flags override the config.")
	cfgPath := fs.String("config", "", "config file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	listen := fs.String("listen", "", "address to listen on (guard.listen)")
	upstream := fs.String("upstream", "", "upstream MTA host:port (guard.upstream)")
	dryRun := fs.Bool("dry-run", false, "log would-be bans; touch neither the block list nor the firewall")
	if err := parseFlagsOnly(e, fs, args); err != nil {
		return err
	}
	cfg, path, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	gcfg := cfg.GuardConfig()
	gcfg.Enabled = true
	if *listen != "" {
		gcfg.Listen = *listen
	}
	if *upstream != "" {
		gcfg.Upstream = *upstream
	}
	if err := gcfg.Validate(); err != nil {
		return &configError{err}
	}
	return runUntilSignal(cfg, daemon.Options{ConfigPath: path, DryRun: *dryRun, LogOutput: e.stderr, Guard: &gcfg})
}

// runUntilSignal runs the daemon until SIGTERM or SIGINT (SIGHUP reloads);
// a configuration it cannot run with exits 2.
func runUntilSignal(cfg *config.Config, opts daemon.Options) error {
	err := daemon.Run(context.Background(), cfg, opts)
	if errors.As(err, new(*daemon.ConfigError)) {
		return &configError{err}
	}
	return err
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
