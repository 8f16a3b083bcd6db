package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/command"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// chainConfig is the default chain config, run inside ns.
func chainConfig(tb testing.TB, ns, target string) IPTablesChainConfig {
	c := DefaultIPTablesChainConfig()
	c.Target = target
	c.IPTablesPath = netnstest.Wrapper(tb, ns, "iptables")
	c.IP6TablesPath = netnstest.Wrapper(tb, ns, "ip6tables")
	c.IPTablesRestorePath = netnstest.Wrapper(tb, ns, "iptables-restore")
	c.IP6TablesRestorePath = netnstest.Wrapper(tb, ns, "ip6tables-restore")
	return c
}

func rules(t *testing.T, ns, prog, chain string) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns, prog, "-S", chain).CombinedOutput()
	return string(out)
}

func testBan(p string, d time.Duration) ban.Ban {
	now := time.Now()
	return ban.Ban{Prefix: testPrefix(p), Detector: "test", Reason: "test ban", Since: now, Until: now.Add(d)}
}

func testPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestNetnsIPTablesRules(t *testing.T) {
	netnstest.Require(t, "iptables", "ip6tables")
	ns := netnstest.New(t)
	ctx := context.Background()
	a, err := NewIPTables(IPTablesConfig{Enabled: true, IPTablesChainConfig: chainConfig(t, ns, "DROP")}, IPTablesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, ns, "iptables", "INPUT"); !strings.Contains(got, "-A INPUT -p tcp -m multiport --dports 25,465,587 -j MXGUARD") {
		t.Fatalf("jump missing after Sync:\n%s", got)
	}
	cases := []struct{ prog, prefix, rule string }{
		{"iptables", "203.0.113.7/32", "-A MXGUARD -s 203.0.113.7/32 -j DROP"},
		{"iptables", "198.51.100.0/24", "-A MXGUARD -s 198.51.100.0/24 -j DROP"},
		{"ip6tables", "2001:db8:1::7/128", "-A MXGUARD -s 2001:db8:1::7/128 -j DROP"},
		{"ip6tables", "2001:db8:2::/48", "-A MXGUARD -s 2001:db8:2::/48 -j DROP"},
	}
	for _, c := range cases {
		b := testBan(c.prefix, time.Hour)
		for range 2 { // idempotent
			if err := a.Apply(ctx, b); err != nil {
				t.Fatalf("Apply %s: %v", c.prefix, err)
			}
		}
		got := rules(t, ns, c.prog, "MXGUARD")
		if strings.Count(got, c.rule) != 1 {
			t.Errorf("after ban %s: want exactly one %q in\n%s", c.prefix, c.rule, got)
		}
	}
	for _, c := range cases {
		for range 2 {
			if err := a.Revoke(ctx, testPrefix(c.prefix)); err != nil {
				t.Fatalf("Revoke %s: %v", c.prefix, err)
			}
		}
		if got := rules(t, ns, c.prog, "MXGUARD"); strings.Contains(got, c.rule) {
			t.Errorf("after unban %s: %q still in\n%s", c.prefix, c.rule, got)
		}
	}

	// Heal: manual flush of the chain and removal of the jump.
	active := []ban.Ban{testBan("203.0.113.7/32", time.Hour), testBan("2001:db8:1::7/128", time.Hour)}
	if err := a.Sync(ctx, active); err != nil {
		t.Fatal(err)
	}
	netnstest.Run(t, "ip", "netns", "exec", ns, "iptables", "-F", "MXGUARD")
	netnstest.Run(t, "ip", "netns", "exec", ns, "iptables", "-D", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "25,465,587", "-j", "MXGUARD")
	netnstest.Run(t, "ip", "netns", "exec", ns, "ip6tables", "-F", "MXGUARD")
	netnstest.Run(t, "ip", "netns", "exec", ns, "ip6tables", "-D", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "25,465,587", "-j", "MXGUARD")
	netnstest.Run(t, "ip", "netns", "exec", ns, "ip6tables", "-X", "MXGUARD")
	// Stale rule and a foreign rule (not ours: kept).
	netnstest.Run(t, "ip", "netns", "exec", ns, "iptables", "-A", "MXGUARD", "-s", "192.0.2.99", "-j", "DROP")
	netnstest.Run(t, "ip", "netns", "exec", ns, "iptables", "-A", "MXGUARD", "-p", "udp", "-j", "ACCEPT")
	if err := a.Sync(ctx, active); err != nil {
		t.Fatal(err)
	}
	got4 := rules(t, ns, "iptables", "MXGUARD")
	got6 := rules(t, ns, "ip6tables", "MXGUARD")
	for _, c := range []struct{ got, want string }{
		{got4, "-A MXGUARD -s 203.0.113.7/32 -j DROP"},
		{got4, "-A MXGUARD -p udp -j ACCEPT"},
		{got6, "-A MXGUARD -s 2001:db8:1::7/128 -j DROP"},
		{rules(t, ns, "iptables", "INPUT"), "-j MXGUARD"},
		{rules(t, ns, "ip6tables", "INPUT"), "-j MXGUARD"},
	} {
		if !strings.Contains(c.got, c.want) {
			t.Errorf("after Sync: %q missing in\n%s", c.want, c.got)
		}
	}
	if strings.Contains(got4, "192.0.2.99") {
		t.Errorf("after Sync: stale rule kept:\n%s", got4)
	}
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, ns, "iptables", "INPUT"); strings.Contains(got, "MXGUARD") {
		t.Errorf("after Cleanup:\n%s", got)
	}
}

// packetCase runs the connect before / after ban / after unban
// sequence for one firewall action in the server namespace.
func packetCase(t *testing.T, server, client, target string, act ban.Action) {
	ctx := context.Background()
	blocked := map[string]string{"DROP": "timeout", "REJECT": "refused"}[target]
	dests := []struct{ network, addr, src string }{
		{"tcp4", "192.0.2.1:25", "192.0.2.2/32"},
		{"tcp6", "[2001:db8::1]:25", "2001:db8::2/128"},
	}
	for _, d := range dests {
		netnstest.ExpectDial(t, client, d.network, d.addr, "ok")
	}
	if err := act.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		if err := act.Apply(ctx, testBan(d.src, time.Hour)); err != nil {
			t.Fatal(err)
		}
		netnstest.ExpectDial(t, client, d.network, d.addr, blocked)
		if err := act.Revoke(ctx, testPrefix(d.src)); err != nil {
			t.Fatal(err)
		}
		netnstest.ExpectDial(t, client, d.network, d.addr, "ok")
	}
	// Sync with a ban blocks, Sync without unblocks.
	if err := act.Sync(ctx, []ban.Ban{testBan("192.0.2.0/24", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", blocked)
	if err := act.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
}

// countingWrapper is like netnstest.Wrapper and also appends a line to
// log for every run.
func countingWrapper(t *testing.T, ns, prog, log string) string {
	t.Helper()
	real, err := exec.LookPath(prog)
	if err != nil {
		t.Skipf("skipping: %s not installed", prog)
	}
	p := filepath.Join(t.TempDir(), prog)
	script := fmt.Sprintf("#!/bin/sh\necho %s >>%s\nexec ip netns exec %s %s \"$@\"\n", prog, log, ns, real)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNetnsIPTablesBulkRestore: Sync loads 1000 bans with one
// iptables-restore run, exactly those rules exist, a foreign rule stays,
// and a connection from a banned address is dropped.
func TestNetnsIPTablesBulkRestore(t *testing.T) {
	netnstest.Require(t, "iptables", "ip6tables", "iptables-restore", "ip6tables-restore")
	server, client := netnstest.Pair(t)
	netnstest.Listen(t, server, "tcp4", "192.0.2.1:25")
	netnstest.Listen(t, server, "tcp6", "[2001:db8::1]:25")
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	log := filepath.Join(t.TempDir(), "runs")
	cfg := DefaultIPTablesConfig()
	cfg.IPTablesPath = countingWrapper(t, server, "iptables", log)
	cfg.IP6TablesPath = countingWrapper(t, server, "ip6tables", log)
	cfg.IPTablesRestorePath = countingWrapper(t, server, "iptables-restore", log)
	cfg.IP6TablesRestorePath = countingWrapper(t, server, "ip6tables-restore", log)
	a, err := NewIPTables(cfg, IPTablesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bans, _ := bulkBans(999)
	bans = append(bans, testBan("192.0.2.2/32", time.Hour)) // the client
	// A rule an admin added by hand: kept, and the restore must not
	// stumble over an existing chain.
	netnstest.Run(t, "ip", "netns", "exec", server, "iptables", "-N", "MXGUARD")
	netnstest.Run(t, "ip", "netns", "exec", server, "iptables", "-A", "MXGUARD", "-p", "udp", "-j", "ACCEPT")
	if err := os.WriteFile(log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(context.Background(), bans); err != nil {
		t.Fatal(err)
	}
	runs, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(runs), "iptables-restore\n"); n != 1 || strings.Count(string(runs), "\n") > 8 {
		t.Errorf("Sync of 1000 bans ran %d iptables-restore and %d programs in all, want 1 and at most 8:\n%s",
			n, strings.Count(string(runs), "\n"), runs)
	}
	want := []string{"-N MXGUARD", "-A MXGUARD -p udp -j ACCEPT"}
	for _, b := range bans {
		want = append(want, "-A MXGUARD -s "+b.Prefix.String()+" -j DROP")
	}
	got := strings.Split(strings.TrimSpace(rules(t, server, "iptables", "MXGUARD")), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("iptables -S MXGUARD: %d lines, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	if got := rules(t, server, "iptables", "INPUT"); strings.Count(got, "-j MXGUARD") != 1 {
		t.Errorf("want one jump:\n%s", got)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout")
	netnstest.ExpectDial(t, client, "tcp6", "[2001:db8::1]:25", "ok") // not banned
	// Unbanned by the next Sync.
	if err := a.Sync(context.Background(), bans[:999]); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
}

func TestNetnsPacket(t *testing.T) {
	netnstest.Require(t, "iptables", "ip6tables", "ipset")
	for _, backend := range []string{"iptables", "ipset"} {
		for _, target := range []string{"DROP", "REJECT"} {
			t.Run(backend+"/"+target, func(t *testing.T) {
				server, client := netnstest.Pair(t)
				netnstest.Listen(t, server, "tcp4", "192.0.2.1:25")
				netnstest.Listen(t, server, "tcp6", "[2001:db8::1]:25")
				chain := chainConfig(t, server, target)
				var act ban.Action
				var err error
				if backend == "iptables" {
					act, err = NewIPTables(IPTablesConfig{Enabled: true, IPTablesChainConfig: chain}, IPTablesOptions{})
				} else {
					cfg := DefaultIPSetConfig()
					cfg.IPTablesChainConfig = chain
					act, err = NewIPSet(cfg, IPSetOptions{Runner: command.OS{Prefix: []string{"ip", "netns", "exec", server}}})
				}
				if err != nil {
					t.Fatal(err)
				}
				packetCase(t, server, client, target, act)
			})
		}
	}
}

func TestNetnsIPSetSets(t *testing.T) {
	netnstest.Require(t, "iptables", "ip6tables", "ipset")
	ns := netnstest.New(t)
	ctx := context.Background()
	cfg := DefaultIPSetConfig()
	cfg.IPTablesChainConfig = chainConfig(t, ns, "DROP")
	a, err := NewIPSet(cfg, IPSetOptions{Runner: command.OS{Prefix: []string{"ip", "netns", "exec", ns}}})
	if err != nil {
		t.Fatal(err)
	}
	list := func(set string) string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list", set).CombinedOutput()
		return string(out)
	}
	if err := a.Apply(ctx, testBan("203.0.113.7/32", 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, testBan("2001:db8:5::/48", 1000*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := list("mxguard-v4"); !strings.Contains(got, "203.0.113.7 timeout") {
		t.Errorf("v4 entry missing:\n%s", got)
	}
	got6 := list("mxguard-v6")
	if !strings.Contains(got6, "2001:db8:5::/48 timeout") {
		t.Errorf("v6 entry missing:\n%s", got6)
	}
	// 1000 days is beyond the kernel's largest timeout: no kernel expiry
	// (a capped timeout would lift the ban early), the manager revokes it.
	if !strings.Contains(got6, "2001:db8:5::/48 timeout 0") {
		t.Errorf("long ban not kept without kernel timeout:\n%s", got6)
	}
	if got := rules(t, ns, "iptables", "MXGUARD"); !strings.Contains(got, "-A MXGUARD -m set --match-set mxguard-v4 src -j DROP") {
		t.Errorf("set rule missing:\n%s", got)
	}
	// Sync replaces the content: stale entry gone, new one present.
	if err := a.Sync(ctx, []ban.Ban{testBan("198.51.100.0/24", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got := list("mxguard-v4")
	if strings.Contains(got, "203.0.113.7") || !strings.Contains(got, "198.51.100.0/24") {
		t.Errorf("after Sync:\n%s", got)
	}
	// Heal after someone flushed our chain.
	netnstest.Run(t, "ip", "netns", "exec", ns, "iptables", "-F", "MXGUARD")
	if err := a.Sync(ctx, []ban.Ban{testBan("198.51.100.0/24", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, ns, "iptables", "MXGUARD"); !strings.Contains(got, "--match-set mxguard-v4 src") {
		t.Errorf("set rule not healed:\n%s", got)
	}
	if err := a.Revoke(ctx, testPrefix("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	if got := list("mxguard-v4"); strings.Contains(got, "198.51.100.0/24") {
		t.Errorf("after Revoke:\n%s", got)
	}
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := list("mxguard-v4"); !strings.Contains(got, "does not exist") {
		t.Errorf("after Cleanup set still there:\n%s", got)
	}
}
