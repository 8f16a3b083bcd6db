package firewall

import (
	"context"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// Benchmarks, as root, each in namespaces of its own:
//
//	go test -run '^$' -bench NFTables -benchtime 1x ./actions/firewall

// benchBans6 returns n /128 bans from 2001:db8:1::/48.
func benchBans6(n int) []ban.Ban {
	until := time.Now().Add(time.Hour)
	out := make([]ban.Ban, n)
	for i := range n {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(i >> 8), 15: byte(i), 13: byte(i >> 16)})
		out[i] = ban.Ban{Prefix: netip.PrefixFrom(a, 128), Reason: "bench", Until: until}
	}
	return out
}

// BenchmarkNFTablesSync100k: Sync of 100k bans (one family) when the
// table does not exist, when the set was flushed by hand
// (`nft flush set`), and when all are in place already (a restart). The
// content is replaced in one transaction in every case.
func BenchmarkNFTablesSync100k(b *testing.B) {
	netnstest.Require(b, "nft")
	ctx := context.Background()
	for _, fam := range []string{"v4", "v6"} {
		bans := benchBans(100000)
		set := "banned_v4"
		if fam == "v6" {
			bans, set = benchBans6(100000), "banned_v6"
		}
		for _, state := range []string{"no-table", "flushed", "unchanged"} {
			b.Run(fam+"/"+state, func(b *testing.B) {
				ns := netnstest.New(b)
				a := newNSNFT(b, ns, DefaultNFTablesConfig())
				var cpu time.Duration
				for range b.N {
					b.StopTimer()
					switch state {
					case "no-table":
						exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "mxguard").Run()
					case "flushed", "unchanged":
						if err := a.Sync(ctx, bans); err != nil {
							b.Fatal(err)
						}
						if state == "flushed" {
							nft(b, ns, "flush", "set", "inet", "mxguard", set)
						}
					}
					b.StartTimer()
					before := cpuTime(b)
					if err := a.Sync(ctx, bans); err != nil {
						b.Fatal(err)
					}
					cpu += cpuTime(b) - before
				}
				b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/sync")
				// User and system time of the process (the kernel handles a
				// transaction inside our sendmsg): the wall time above also
				// holds the wait for a core on a loaded machine.
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/sync")
				// No check of the content here: the kernel's dump of an interval
				// set is quadratic (about 30 s at 100k); TestNetnsNFTablesSyncLimits
				// checks every element of 6000 per family.
			})
		}
	}
}

// BenchmarkNFTablesApply1k: one transaction per ban.
func BenchmarkNFTablesApply1k(b *testing.B) {
	netnstest.Require(b, "nft")
	ns := netnstest.New(b)
	a := newNSNFT(b, ns, DefaultNFTablesConfig())
	bans := benchBans(1000)
	ctx := context.Background()
	for b.Loop() {
		if err := a.Sync(ctx, nil); err != nil {
			b.Fatal(err)
		}
		for _, x := range bans {
			if err := a.Apply(ctx, x); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N*len(bans)), "ms/ban")
}

// BenchmarkNFTablesConnect200: 200 TCP connects through the veth to port
// 25 with no bans, and with 100k bans (none matching the client) in the
// nftables set or in the ipset set, as BenchmarkConnect200 does for 10k.
func BenchmarkNFTablesConnect200(b *testing.B) {
	netnstest.Require(b, "nft", "iptables", "ip6tables", "ipset")
	bans := benchBans(100000)
	for _, mode := range []string{"none", "nftables-100k", "ipset-100k"} {
		b.Run(mode, func(b *testing.B) {
			server, client := netnstest.Pair(b)
			netnstest.Listen(b, server, "tcp4", "192.0.2.1:25")
			switch mode {
			case "nftables-100k":
				if err := newNSNFT(b, server, DefaultNFTablesConfig()).Sync(context.Background(), bans); err != nil {
					b.Fatal(err)
				}
			case "ipset-100k":
				if err := benchIPSet(b, server).Sync(context.Background(), bans); err != nil {
					b.Fatal(err)
				}
			}
			// Warm up (neighbour discovery, listener) outside the timing.
			if err := netnstest.Dial(client, "tcp4", "192.0.2.1:25", 5*time.Second, 1); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := netnstest.Dial(client, "tcp4", "192.0.2.1:25", 5*time.Second, 200); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e6/float64(b.N*200), "µs/connect")
		})
	}
}

// cpuTime is the process's user plus system time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
