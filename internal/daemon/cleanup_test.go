package daemon

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// With Cleanup the shutdown removes the firewall chain; without it the
// chain and its rules stay for the next start. Dry-run shows it without
// root: the iptables commands are printed instead of run.
func TestCleanupDryRun(t *testing.T) {
	for _, cleanup := range []bool{true, false} {
		t.Run(map[bool]string{true: "cleanup", false: "no cleanup"}[cleanup], func(t *testing.T) {
			cfg := newTestConfig(t)
			cfg.DryRun = true
			cfg.Actions.IPTables.Enabled = true
			cfg.Actions.IPTables.IPv6 = false
			td := startDaemonWith(t, cfg, Options{Cleanup: cleanup})
			var lines []string
			for i := range 5 {
				lines = append(lines, dictLine("203.0.113.77", i))
			}
			appendLines(t, td.log, lines...)
			const rule = "iptables -t filter -A MXGUARD -s 203.0.113.77/32 -j DROP"
			waitFor(t, rule, 5*time.Second, func() bool { return strings.Contains(td.logs.String(), rule) }, td.logs)
			td.stop(t)
			logs := td.logs.String()
			for _, cmd := range []string{
				"iptables -t filter -D INPUT -p tcp -m multiport --dports 25,465,587 -j MXGUARD",
				"iptables -t filter -F MXGUARD",
				"iptables -t filter -X MXGUARD",
			} {
				if strings.Contains(logs, cmd) != cleanup {
					t.Errorf("shutdown with cleanup=%v: %q printed: %v\n%s", cleanup, cmd, !cleanup, logs)
				}
			}
		})
	}
}

// The same with the real iptables, in a network namespace of its own.
func TestCleanupNetns(t *testing.T) {
	netnstest.Require(t, "iptables", "ip6tables")
	for _, cleanup := range []bool{true, false} {
		t.Run(map[bool]string{true: "cleanup", false: "no cleanup"}[cleanup], func(t *testing.T) {
			ns := netnstest.New(t)
			cfg := newTestConfig(t)
			cfg.Actions.IPTables.Enabled = true
			cfg.Actions.IPTables.IPTablesPath = netnstest.Wrapper(t, ns, "iptables")
			cfg.Actions.IPTables.IP6TablesPath = netnstest.Wrapper(t, ns, "ip6tables")
			cfg.Actions.IPTables.IPTablesRestorePath = netnstest.Wrapper(t, ns, "iptables-restore")
			cfg.Actions.IPTables.IP6TablesRestorePath = netnstest.Wrapper(t, ns, "ip6tables-restore")
			td := startDaemonWith(t, cfg, Options{Cleanup: cleanup})
			if err := call(t, td.sock, control.Request{Cmd: control.CmdBan, IP: "203.0.113.7", For: "1h"}, nil); err != nil {
				t.Fatal(err)
			}
			const rule = "-A MXGUARD -s 203.0.113.7/32 -j DROP"
			waitFor(t, "the ban's rule", 5*time.Second, func() bool {
				return strings.Contains(iptablesS(ns, "iptables", "MXGUARD"), rule)
			}, td.logs)
			td.stop(t)
			for _, prog := range []string{"iptables", "ip6tables"} {
				all := iptablesS(ns, prog, "")
				chain := strings.Contains(all, "-N MXGUARD\n")
				jump := strings.Contains(all, "-j MXGUARD")
				if chain == cleanup || jump == cleanup {
					t.Errorf("%s after shutdown with cleanup=%v: chain left %v, jump left %v\n%s", prog, cleanup, chain, jump, all)
				}
			}
			if !cleanup && !strings.Contains(iptablesS(ns, "iptables", "MXGUARD"), rule) {
				t.Error("without cleanup the ban's rule must stay")
			}
		})
	}
}

// iptablesS is `iptables -S [chain]` in ns, with its error text.
func iptablesS(ns, prog, chain string) string {
	args := []string{"netns", "exec", ns, prog, "-S"}
	if chain != "" {
		args = append(args, chain)
	}
	out, _ := exec.Command("ip", args...).CombinedOutput()
	return string(out)
}
