package actions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Helpers for the tests that need root: every firewall change happens in
// network namespaces the test creates and deletes; the host's tables are
// never touched.

// netnsXRequire skips unless we are root and the programs exist.
func netnsXRequire(tb testing.TB, progs ...string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("skipping namespace test in -short mode")
	}
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	for _, p := range append([]string{"ip"}, progs...) {
		if _, err := exec.LookPath(p); err != nil {
			tb.Skipf("skipping: %s not installed (apt-get install iproute2 iptables ipset)", p)
		}
	}
}

func netnsXRun(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netnsXNew creates a namespace mxg-test-XXXXXXXX, deleted at cleanup.
func netnsXNew(tb testing.TB) string {
	tb.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := "mxg-test-" + hex.EncodeToString(b[:])
	netnsXRun(tb, "ip", "netns", "add", ns)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v %s", ns, err, out)
		}
	})
	netnsXRun(tb, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// netnsXWrapper writes a script that runs prog inside ns, for
// IPTablesChainConfig.IPTablesPath (go-iptables wants one program path).
func netnsXWrapper(tb testing.TB, ns, prog string) string {
	tb.Helper()
	real, err := exec.LookPath(prog)
	if err != nil {
		tb.Skipf("skipping: %s not installed", prog)
	}
	p := filepath.Join(tb.TempDir(), prog+"-"+ns)
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns, real)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return p
}

// netnsXChainConfig is the default chain config, run inside ns.
func netnsXChainConfig(tb testing.TB, ns, target string) IPTablesChainConfig {
	c := DefaultIPTablesChainConfig()
	c.Target = target
	c.IPTablesPath = netnsXWrapper(tb, ns, "iptables")
	c.IP6TablesPath = netnsXWrapper(tb, ns, "ip6tables")
	return c
}

// netnsXDo runs fn on an OS thread that has entered ns. Sockets created
// in fn belong to ns for their whole life. The thread is never unlocked,
// so Go throws it away when the goroutine ends.
func netnsXDo(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// netnsXPair makes two namespaces joined by a veth pair: server has
// 192.0.2.1 and 2001:db8::1, client 192.0.2.2 and 2001:db8::2.
func netnsXPair(tb testing.TB) (server, client string) {
	tb.Helper()
	server, client = netnsXNew(tb), netnsXNew(tb)
	netnsXRun(tb, "ip", "link", "add", "mxgs", "netns", server, "type", "veth", "peer", "name", "mxgc", "netns", client)
	for _, s := range []struct{ ns, dev, v4, v6 string }{
		{server, "mxgs", "192.0.2.1/24", "2001:db8::1/64"},
		{client, "mxgc", "192.0.2.2/24", "2001:db8::2/64"},
	} {
		netnsXRun(tb, "ip", "-n", s.ns, "addr", "add", s.v4, "dev", s.dev)
		netnsXRun(tb, "ip", "-n", s.ns, "-6", "addr", "add", s.v6, "dev", s.dev, "nodad")
		netnsXRun(tb, "ip", "-n", s.ns, "link", "set", s.dev, "up")
	}
	return server, client
}

// netnsXListen serves TCP on addr inside ns: accept and close.
func netnsXListen(tb testing.TB, ns, network, addr string) {
	tb.Helper()
	var ln net.Listener
	if err := netnsXDo(ns, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		tb.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// netnsXDial connects n times from ns to addr, each with timeout.
func netnsXDial(ns, network, addr string, timeout time.Duration, n int) error {
	return netnsXDo(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		for range n {
			c, err := d.Dial(network, addr)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
}

// netnsXExpectDial checks the outcome of one connect: "ok", "timeout"
// (DROP) or "refused" (REJECT with tcp-reset).
func netnsXExpectDial(t *testing.T, ns, network, addr, want string) {
	t.Helper()
	err := netnsXDial(ns, network, addr, time.Second, 1)
	var ne net.Error
	got := "ok"
	switch {
	case err == nil:
	case errors.Is(err, syscall.ECONNREFUSED):
		got = "refused"
	case errors.As(err, &ne) && ne.Timeout():
		got = "timeout"
	default:
		got = err.Error()
	}
	if got != want {
		t.Errorf("connect %s %s: got %s (%v), want %s", network, addr, got, err, want)
	}
}

func netnsXRules(t *testing.T, ns, prog, chain string) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns, prog, "-S", chain).CombinedOutput()
	return string(out)
}

func netnsXBan(p string, d time.Duration) Ban {
	now := time.Now()
	return Ban{Prefix: netnsXPrefix(p), Detector: "test", Reason: "test ban", Since: now, Until: now.Add(d)}
}

func netnsXPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestNetnsIPTablesRules(t *testing.T) {
	netnsXRequire(t, "iptables", "ip6tables")
	ns := netnsXNew(t)
	ctx := context.Background()
	a, err := NewIPTables(IPTablesConfig{Enabled: true, IPTablesChainConfig: netnsXChainConfig(t, ns, "DROP")}, IPTablesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := netnsXRules(t, ns, "iptables", "INPUT"); !strings.Contains(got, "-A INPUT -p tcp -m multiport --dports 25,465,587 -j MXGUARD") {
		t.Fatalf("jump missing after Sync:\n%s", got)
	}
	cases := []struct{ prog, prefix, rule string }{
		{"iptables", "203.0.113.7/32", "-A MXGUARD -s 203.0.113.7/32 -j DROP"},
		{"iptables", "198.51.100.0/24", "-A MXGUARD -s 198.51.100.0/24 -j DROP"},
		{"ip6tables", "2001:db8:1::7/128", "-A MXGUARD -s 2001:db8:1::7/128 -j DROP"},
		{"ip6tables", "2001:db8:2::/48", "-A MXGUARD -s 2001:db8:2::/48 -j DROP"},
	}
	for _, c := range cases {
		b := netnsXBan(c.prefix, time.Hour)
		for range 2 { // idempotent
			if err := a.Apply(ctx, b); err != nil {
				t.Fatalf("Apply %s: %v", c.prefix, err)
			}
		}
		got := netnsXRules(t, ns, c.prog, "MXGUARD")
		if strings.Count(got, c.rule) != 1 {
			t.Errorf("after ban %s: want exactly one %q in\n%s", c.prefix, c.rule, got)
		}
	}
	for _, c := range cases {
		for range 2 {
			if err := a.Revoke(ctx, netnsXPrefix(c.prefix)); err != nil {
				t.Fatalf("Revoke %s: %v", c.prefix, err)
			}
		}
		if got := netnsXRules(t, ns, c.prog, "MXGUARD"); strings.Contains(got, c.rule) {
			t.Errorf("after unban %s: %q still in\n%s", c.prefix, c.rule, got)
		}
	}

	// Heal: manual flush of the chain and removal of the jump.
	active := []Ban{netnsXBan("203.0.113.7/32", time.Hour), netnsXBan("2001:db8:1::7/128", time.Hour)}
	if err := a.Sync(ctx, active); err != nil {
		t.Fatal(err)
	}
	netnsXRun(t, "ip", "netns", "exec", ns, "iptables", "-F", "MXGUARD")
	netnsXRun(t, "ip", "netns", "exec", ns, "iptables", "-D", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "25,465,587", "-j", "MXGUARD")
	netnsXRun(t, "ip", "netns", "exec", ns, "ip6tables", "-F", "MXGUARD")
	netnsXRun(t, "ip", "netns", "exec", ns, "ip6tables", "-D", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "25,465,587", "-j", "MXGUARD")
	netnsXRun(t, "ip", "netns", "exec", ns, "ip6tables", "-X", "MXGUARD")
	// Stale rule and a foreign rule (not ours: kept).
	netnsXRun(t, "ip", "netns", "exec", ns, "iptables", "-A", "MXGUARD", "-s", "192.0.2.99", "-j", "DROP")
	netnsXRun(t, "ip", "netns", "exec", ns, "iptables", "-A", "MXGUARD", "-p", "udp", "-j", "ACCEPT")
	if err := a.Sync(ctx, active); err != nil {
		t.Fatal(err)
	}
	got4 := netnsXRules(t, ns, "iptables", "MXGUARD")
	got6 := netnsXRules(t, ns, "ip6tables", "MXGUARD")
	for _, c := range []struct{ got, want string }{
		{got4, "-A MXGUARD -s 203.0.113.7/32 -j DROP"},
		{got4, "-A MXGUARD -p udp -j ACCEPT"},
		{got6, "-A MXGUARD -s 2001:db8:1::7/128 -j DROP"},
		{netnsXRules(t, ns, "iptables", "INPUT"), "-j MXGUARD"},
		{netnsXRules(t, ns, "ip6tables", "INPUT"), "-j MXGUARD"},
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
	if got := netnsXRules(t, ns, "iptables", "INPUT"); strings.Contains(got, "MXGUARD") {
		t.Errorf("after Cleanup:\n%s", got)
	}
}

// netnsXPacketCase runs the connect before / after ban / after unban
// sequence for one firewall action in the server namespace.
func netnsXPacketCase(t *testing.T, server, client, target string, act Action) {
	ctx := context.Background()
	blocked := map[string]string{"DROP": "timeout", "REJECT": "refused"}[target]
	dests := []struct{ network, addr, src string }{
		{"tcp4", "192.0.2.1:25", "192.0.2.2/32"},
		{"tcp6", "[2001:db8::1]:25", "2001:db8::2/128"},
	}
	for _, d := range dests {
		netnsXExpectDial(t, client, d.network, d.addr, "ok")
	}
	if err := act.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		if err := act.Apply(ctx, netnsXBan(d.src, time.Hour)); err != nil {
			t.Fatal(err)
		}
		netnsXExpectDial(t, client, d.network, d.addr, blocked)
		if err := act.Revoke(ctx, netnsXPrefix(d.src)); err != nil {
			t.Fatal(err)
		}
		netnsXExpectDial(t, client, d.network, d.addr, "ok")
	}
	// Sync with a ban blocks, Sync without unblocks.
	if err := act.Sync(ctx, []Ban{netnsXBan("192.0.2.0/24", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	netnsXExpectDial(t, client, "tcp4", "192.0.2.1:25", blocked)
	if err := act.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	netnsXExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
}

func TestNetnsPacket(t *testing.T) {
	netnsXRequire(t, "iptables", "ip6tables", "ipset")
	for _, backend := range []string{"iptables", "ipset"} {
		for _, target := range []string{"DROP", "REJECT"} {
			t.Run(backend+"/"+target, func(t *testing.T) {
				server, client := netnsXPair(t)
				netnsXListen(t, server, "tcp4", "192.0.2.1:25")
				netnsXListen(t, server, "tcp6", "[2001:db8::1]:25")
				chain := netnsXChainConfig(t, server, target)
				var act Action
				var err error
				if backend == "iptables" {
					act, err = NewIPTables(IPTablesConfig{Enabled: true, IPTablesChainConfig: chain}, IPTablesOptions{})
				} else {
					cfg := DefaultIPSetConfig()
					cfg.IPTablesChainConfig = chain
					act, err = NewIPSet(cfg, IPSetOptions{Runner: ExecOS{Prefix: []string{"ip", "netns", "exec", server}}})
				}
				if err != nil {
					t.Fatal(err)
				}
				netnsXPacketCase(t, server, client, target, act)
			})
		}
	}
}

func TestNetnsIPSetSets(t *testing.T) {
	netnsXRequire(t, "iptables", "ip6tables", "ipset")
	ns := netnsXNew(t)
	ctx := context.Background()
	cfg := DefaultIPSetConfig()
	cfg.IPTablesChainConfig = netnsXChainConfig(t, ns, "DROP")
	a, err := NewIPSet(cfg, IPSetOptions{Runner: ExecOS{Prefix: []string{"ip", "netns", "exec", ns}}})
	if err != nil {
		t.Fatal(err)
	}
	list := func(set string) string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list", set).CombinedOutput()
		return string(out)
	}
	if err := a.Apply(ctx, netnsXBan("203.0.113.7/32", 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, netnsXBan("2001:db8:5::/48", 1000*24*time.Hour)); err != nil {
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
	if got := netnsXRules(t, ns, "iptables", "MXGUARD"); !strings.Contains(got, "-A MXGUARD -m set --match-set mxguard-v4 src -j DROP") {
		t.Errorf("set rule missing:\n%s", got)
	}
	// Sync replaces the content: stale entry gone, new one present.
	if err := a.Sync(ctx, []Ban{netnsXBan("198.51.100.0/24", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got := list("mxguard-v4")
	if strings.Contains(got, "203.0.113.7") || !strings.Contains(got, "198.51.100.0/24") {
		t.Errorf("after Sync:\n%s", got)
	}
	// Heal after someone flushed our chain.
	netnsXRun(t, "ip", "netns", "exec", ns, "iptables", "-F", "MXGUARD")
	if err := a.Sync(ctx, []Ban{netnsXBan("198.51.100.0/24", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got := netnsXRules(t, ns, "iptables", "MXGUARD"); !strings.Contains(got, "--match-set mxguard-v4 src") {
		t.Errorf("set rule not healed:\n%s", got)
	}
	if err := a.Revoke(ctx, netnsXPrefix("198.51.100.0/24")); err != nil {
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
