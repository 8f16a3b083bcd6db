package daemon

import (
	"path/filepath"

	"github.com/mxguard/mxguard/actions/dnsbl"
	"github.com/mxguard/mxguard/internal/config"
)

// buildDNSBL makes the DNSBL publisher when publish.dnsbl is enabled (nil
// otherwise). A dry run publishes nothing and binds nothing: its bans are
// never published, and the real daemon may hold the port.
func (d *Daemon) buildDNSBL(cfg *config.Config) (*dnsbl.Publisher, error) {
	c := cfg.Publish.DNSBL
	if !c.Enabled {
		return nil, nil
	}
	if cfg.DryRun {
		d.log.Info("publish.dnsbl: not served in a dry run")
		return nil, nil
	}
	pub, err := dnsbl.New(c, dnsbl.Options{Logger: d.log, SerialFile: filepath.Join(cfg.StateDir, "dnsbl.serial"),
		MaxPrefixV4: cfg.Ban.MaxPrefixV4, MaxPrefixV6: cfg.Ban.MaxPrefixV6})
	if err != nil {
		return nil, &ConfigError{err}
	}
	return pub, nil
}
