package firewall

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/command"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// BenchmarkRestore measures the start-up Sync that restores every active
// ban at once, as root, each case in a namespace of its own:
//
//	go test ./actions/firewall -run '^$' -bench Restore -benchtime 1x
//
// "empty": the chain (or set) does not exist yet, as after a reboot.
// "flushed": it exists but an admin flushed it (iptables -F / ipset flush).
func BenchmarkRestore(b *testing.B) {
	netnstest.Require(b, "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "ipset")
	cases := []struct {
		backend, state string
		n              int
	}{
		{"iptables", "empty", 10000},
		{"iptables", "empty", 100000},
		{"iptables", "flushed", 100000},
		{"ipset", "empty", 100000},
		{"ipset", "flushed", 100000},
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("%s-%s-%dk", c.backend, c.state, c.n/1000), func(b *testing.B) {
			bans := benchBans(c.n)
			for range b.N {
				b.StopTimer()
				ns := netnstest.New(b)
				act, count := restoreBenchAction(b, c.backend, ns)
				if c.state == "flushed" {
					ctx := context.Background()
					if err := act.Sync(ctx, bans); err != nil {
						b.Fatal(err)
					}
					if c.backend == "iptables" {
						netnstest.Run(b, "ip", "netns", "exec", ns, "iptables", "-F", "MXGUARD")
					} else {
						netnstest.Run(b, "ip", "netns", "exec", ns, "ipset", "flush", "mxguard-v4")
						netnstest.Run(b, "ip", "netns", "exec", ns, "iptables", "-F", "MXGUARD")
					}
				}
				b.StartTimer()
				if err := act.Sync(context.Background(), bans); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if got := count(); got != c.n {
					b.Fatalf("after Sync: %d entries, want %d", got, c.n)
				}
				b.StartTimer()
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/sync")
		})
	}
}

// restoreBenchAction builds the action in ns and a counter of its
// banned entries.
func restoreBenchAction(b *testing.B, backend, ns string) (ban.Action, func() int) {
	chain := chainConfig(b, ns, "DROP")
	if backend == "iptables" {
		a, err := NewIPTables(IPTablesConfig{Enabled: true, IPTablesChainConfig: chain}, IPTablesOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return a, func() int { return strings.Count(rulesB(b, ns), "-A MXGUARD -s ") }
	}
	cfg := DefaultIPSetConfig()
	cfg.IPTablesChainConfig = chain
	a, err := NewIPSet(cfg, IPSetOptions{Runner: command.OS{Prefix: []string{"ip", "netns", "exec", ns}}})
	if err != nil {
		b.Fatal(err)
	}
	return a, func() int {
		out, err := exec.Command("ip", "netns", "exec", ns, "ipset", "list", "-terse", "mxguard-v4").CombinedOutput()
		if err != nil {
			b.Fatalf("ipset list: %v %s", err, out)
		}
		var n int
		for _, l := range strings.Split(string(out), "\n") {
			if s, ok := strings.CutPrefix(l, "Number of entries: "); ok {
				fmt.Sscan(s, &n)
			}
		}
		return n
	}
}
