package daemon

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/mxguard/mxguard/actions/accessmap"
	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/firewall"
	"github.com/mxguard/mxguard/actions/sessions"
	"github.com/mxguard/mxguard/internal/config"
)

// buildActions creates the enabled firewall, map and session actions, and lists
// those that can remove their firewall rules at shutdown. In dry-run they
// are printers: each would-be ban shows the exact iptables, ipset, nft
// and postmap commands, map lines and sessions to close on out, and
// nothing runs.
func buildActions(cfg *config.Config, log *slog.Logger, out io.Writer) ([]ban.Action, []cleaner, error) {
	var dry io.Writer
	if cfg.DryRun {
		dry = out
	}
	var acts []ban.Action
	var cleaners []cleaner
	fail := func(key string, err error) ([]ban.Action, []cleaner, error) {
		for _, a := range acts {
			a.Close()
		}
		return nil, nil, fmt.Errorf("%s: %w", key, err)
	}
	if c := cfg.Actions.IPTables; c.Enabled {
		a, err := firewall.NewIPTables(c, firewall.IPTablesOptions{Logger: log, DryRun: dry})
		if err != nil {
			return fail("actions.iptables", err)
		}
		acts = append(acts, a)
		cleaners = append(cleaners, a)
	}
	if c := cfg.Actions.IPSet; c.Enabled {
		a, err := firewall.NewIPSet(c, firewall.IPSetOptions{Logger: log, DryRun: dry})
		if err != nil {
			return fail("actions.ipset", err)
		}
		acts = append(acts, a)
		cleaners = append(cleaners, a)
	}
	if c := cfg.Actions.NFTables; c.Enabled {
		a, err := firewall.NewNFTables(c, firewall.NFTablesOptions{Logger: log, DryRun: dry})
		if err != nil {
			return fail("actions.nftables", err)
		}
		acts = append(acts, a)
		cleaners = append(cleaners, a)
	}
	if c := cfg.Actions.PostfixAccess; c.Enabled {
		a, err := accessmap.New(c, accessmap.Options{Logger: log, DryRun: dry})
		if err != nil {
			return fail("actions.postfix_access", err)
		}
		acts = append(acts, a)
	}
	if c := cfg.Actions.KillSessions; c.Enabled {
		a, err := sessions.New(c, sessions.Options{Logger: log, DryRun: dry})
		if err != nil {
			return fail("actions.kill_sessions", err)
		}
		acts = append(acts, a)
	}
	return acts, cleaners, nil
}
