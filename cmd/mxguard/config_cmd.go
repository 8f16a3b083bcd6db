package main

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/mxguard/mxguard/actions/firewall"
	"github.com/mxguard/mxguard/internal/config"
)

func runConfig(e *env, args []string) error {
	if len(args) == 0 || args[0] != "check" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(e.stdout, "usage: mxguard config check [--config F]\n\nValidate the configuration and print the effective configuration (YAML).")
			return nil
		}
		return usagef("want: mxguard config check [--config F]")
	}
	fs := newFlagSet(e, "config check", "",
		"Validate the configuration and print the effective configuration (every key, defaults filled in),\n"+
			"after warnings (as YAML comments) about what is allowed but probably not meant.\n"+
			"Exit status 2 and every problem on stderr when it is invalid.")
	cfgPath := fs.String("config", "", "config file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	quiet := fs.Bool("q", false, "only validate; print nothing when valid")
	if err := parseFlagsOnly(e, fs, args[1:]); err != nil {
		return err
	}
	cfg, path, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	warnings := cfg.Warnings()
	if n := cfg.Actions.NFTables; n.Enabled && !n.SetOnly {
		// what the kernel can do is part of whether this config runs
		switch err := firewall.ProbeNFTables(); {
		case errors.Is(err, syscall.EPERM):
			warnings = append(warnings, "actions.nftables: cannot probe the kernel's nf_tables features: not root")
		case err != nil:
			return &configError{fmt.Errorf("actions.nftables: %w", err)}
		}
	}
	if *quiet {
		for _, w := range warnings {
			fmt.Fprintln(e.stderr, "mxguard config: warning: "+w)
		}
		return nil
	}
	out, err := cfg.Marshal()
	if err != nil {
		return err
	}
	src := path
	if src == "" {
		src = "built-in defaults (no " + config.DefaultPath + ")"
	}
	fmt.Fprintf(e.stdout, "# effective configuration from %s\n", src)
	// as comments, so that the output still loads as a config
	for _, w := range warnings {
		fmt.Fprintln(e.stdout, "# warning: "+w)
	}
	fmt.Fprintf(e.stdout, "%s", out)
	return nil
}
