package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/command"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// Benchmarks, as root, each in namespaces of its own:
//
//	go test -run '^$' -bench . -benchtime 1x ./actions/firewall
//
// Programs run through `ip netns exec` (a wrapper script for iptables),
// which adds roughly one extra exec per call to what a daemon would pay.

// benchBans returns n bans from 198.18.0.0/15 (benchmarking range).
func benchBans(n int) []ban.Ban {
	until := time.Now().Add(time.Hour)
	out := make([]ban.Ban, n)
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		out[i] = ban.Ban{Prefix: netip.PrefixFrom(a, 32), Reason: "bench", Until: until}
	}
	return out
}

func benchIPSet(b *testing.B, ns string) *IPSet {
	cfg := DefaultIPSetConfig()
	cfg.IPTablesChainConfig = chainConfig(b, ns, "DROP")
	a, err := NewIPSet(cfg, IPSetOptions{Runner: command.OS{Prefix: []string{"ip", "netns", "exec", ns}}})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkIPSetSync: bulk load through one `ipset restore` (start-up
// reconcile); every iteration rebuilds the set and swaps it in.
func BenchmarkIPSetSync(b *testing.B) {
	netnstest.Require(b, "iptables", "ip6tables", "ipset")
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ns := netnstest.New(b)
			a := benchIPSet(b, ns)
			bans := benchBans(n)
			for b.Loop() {
				if err := a.Sync(context.Background(), bans); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N), "s/sync")
		})
	}
}

// BenchmarkIPSetApply: one `ipset add` per ban, 1000 bans per iteration.
func BenchmarkIPSetApply1k(b *testing.B) {
	netnstest.Require(b, "iptables", "ip6tables", "ipset")
	ns := netnstest.New(b)
	a := benchIPSet(b, ns)
	bans := benchBans(1000)
	for b.Loop() {
		for _, ban := range bans {
			if err := a.Apply(context.Background(), ban); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N*len(bans)), "ms/ban")
}

// BenchmarkIPTablesApply1k: Exists+Append per ban (two iptables runs),
// bounded to 120 s per iteration.
func BenchmarkIPTablesApply1k(b *testing.B) {
	netnstest.Require(b, "iptables", "ip6tables")
	ns := netnstest.New(b)
	a, err := NewIPTables(IPTablesConfig{IPTablesChainConfig: chainConfig(b, ns, "DROP")}, IPTablesOptions{})
	if err != nil {
		b.Fatal(err)
	}
	bans := benchBans(1000)
	done := 0
	for b.Loop() {
		if err := a.Sync(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(120 * time.Second)
		for _, ban := range bans {
			if time.Now().After(deadline) {
				b.Logf("stopped after %d bans (time bound)", done)
				break
			}
			if err := a.Apply(context.Background(), ban); err != nil {
				b.Fatal(err)
			}
			done++
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(done), "ms/ban")
}

// loadRules loads n `-s ADDR -j DROP` rules at once with
// iptables-restore (test setup that bypasses the action).
func loadRules(b *testing.B, ns string, bans []ban.Ban) {
	var sb strings.Builder
	sb.WriteString("*filter\n")
	for _, ban := range bans {
		sb.WriteString("-A MXGUARD -s " + ban.Prefix.String() + " -j DROP\n")
	}
	sb.WriteString("COMMIT\n")
	cmd := exec.Command("ip", "netns", "exec", ns, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(sb.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("iptables-restore: %v %s", err, out)
	}
}

// BenchmarkIPTablesSync10k: start-up reconcile of a chain that already
// holds 10k rules (one List, nothing to change).
func BenchmarkIPTablesSync10k(b *testing.B) {
	netnstest.Require(b, "iptables", "ip6tables", "iptables-restore")
	ns := netnstest.New(b)
	a, err := NewIPTables(IPTablesConfig{IPTablesChainConfig: chainConfig(b, ns, "DROP")}, IPTablesOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Sync(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
	bans := benchBans(10000)
	loadRules(b, ns, bans)
	for b.Loop() {
		if err := a.Sync(context.Background(), bans); err != nil {
			b.Fatal(err)
		}
	}
	if out := rulesB(b, ns); strings.Count(out, "-A MXGUARD") != 10000 {
		b.Fatalf("want 10000 rules, got %d", strings.Count(out, "-A MXGUARD"))
	}
}

func rulesB(b *testing.B, ns string) string {
	out, _ := exec.Command("ip", "netns", "exec", ns, "iptables", "-S", "MXGUARD").CombinedOutput()
	return string(out)
}

// BenchmarkConnect200: 200 TCP connects through the veth to port 25 with
// no bans, 10k iptables rules (none matching: the packet walks them all)
// and a 10k-entry ipset.
func BenchmarkConnect200(b *testing.B) {
	netnstest.Require(b, "iptables", "ip6tables", "ipset", "iptables-restore")
	bans := benchBans(10000)
	for _, mode := range []string{"none", "iptables-10k", "ipset-10k"} {
		b.Run(mode, func(b *testing.B) {
			server, client := netnstest.Pair(b)
			netnstest.Listen(b, server, "tcp4", "192.0.2.1:25")
			switch mode {
			case "iptables-10k":
				a, err := NewIPTables(IPTablesConfig{IPTablesChainConfig: chainConfig(b, server, "DROP")}, IPTablesOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if err := a.Sync(context.Background(), nil); err != nil {
					b.Fatal(err)
				}
				loadRules(b, server, bans)
			case "ipset-10k":
				if err := benchIPSet(b, server).Sync(context.Background(), bans); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if err := netnstest.Dial(client, "tcp4", "192.0.2.1:25", time.Second, 200); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e6/float64(b.N*200), "µs/connect")
		})
	}
}
