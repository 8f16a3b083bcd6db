package firewall

import (
	"bytes"
	"context"
	"log/slog"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// nsDial opens lasting netlink connections inside ns (the socket stays
// in the namespace it was made in).
func nsDial(ns string) func(opts ...nftables.ConnOption) (*nftables.Conn, error) {
	return func(opts ...nftables.ConnOption) (*nftables.Conn, error) {
		var c *nftables.Conn
		err := netnstest.Do(ns, func() (err error) {
			c, err = nftables.New(opts...)
			return err
		})
		return c, err
	}
}

func newNSNFT(tb testing.TB, ns string, cfg NFTablesConfig) *NFTables {
	tb.Helper()
	a, err := NewNFTables(cfg, NFTablesOptions{Dial: nsDial(ns)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// nft runs the nft program inside ns (inspection and admin set-up only).
func nft(tb testing.TB, ns string, args ...string) string {
	tb.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nftScript loads an nft script inside ns, as an administrator would.
func nftScript(tb testing.TB, ns, script string) {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("nft -f: %v\n%s\n%s", err, out, script)
	}
}

func nftPair(t *testing.T) (server, client string) {
	netnstest.Require(t, "nft")
	server, client = netnstest.Pair(t)
	netnstest.Listen(t, server, "tcp4", "192.0.2.1:25")
	netnstest.Listen(t, server, "tcp6", "[2001:db8::1]:25")
	// Neighbour discovery outside the 1 s connects the checks allow
	// (a loaded machine can take longer for the very first one).
	for _, d := range [][2]string{{"tcp4", "192.0.2.1:25"}, {"tcp6", "[2001:db8::1]:25"}} {
		if err := netnstest.Dial(client, d[0], d[1], 5*time.Second, 1); err != nil {
			t.Fatalf("warm-up connect %s: %v", d[1], err)
		}
	}
	return server, client
}

// Real packets over the veth: v4 and v6 bans and unbans, a /24 by Sync,
// for both targets (the same sequence as iptables and ipset).
func TestNetnsNFTablesPacket(t *testing.T) {
	for _, target := range []string{"DROP", "REJECT"} {
		t.Run(target, func(t *testing.T) {
			server, client := nftPair(t)
			cfg := DefaultNFTablesConfig()
			cfg.Target = target
			packetCase(t, server, client, target, newNSNFT(t, server, cfg))
			// Only our table exists in the namespace.
			if got := nft(t, server, "list", "tables"); strings.TrimSpace(got) != "table inet mxguard" {
				t.Errorf("tables:\n%s", got)
			}
		})
	}
}

// A ban inside a banned prefix is carried by the prefix and comes back
// when the prefix is unbanned; ports outside the list are not affected.
func TestNetnsNFTablesNested(t *testing.T) {
	server, client := nftPair(t)
	netnstest.Listen(t, server, "tcp4", "192.0.2.1:2525")
	ctx := context.Background()
	a := newNSNFT(t, server, DefaultNFTablesConfig())
	for _, b := range []ban.Ban{testBan("192.0.2.2/32", time.Hour), testBan("192.0.2.0/24", time.Hour)} {
		if err := a.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if got := nft(t, server, "list", "set", "inet", "mxguard", "banned_v4"); !strings.Contains(got, "192.0.2.0/24") || strings.Contains(got, "192.0.2.2 ") {
		t.Errorf("want only the /24 in the set:\n%s", got)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout")
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:2525", "ok")
	if err := a.Revoke(ctx, testPrefix("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout") // the /32 is back
	if err := a.Revoke(ctx, testPrefix("192.0.2.2/32")); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	// Revoking what is not there is not an error.
	if err := a.Revoke(ctx, testPrefix("192.0.2.2/32")); err != nil {
		t.Errorf("second Revoke: %v", err)
	}
}

// A ban of 2 s expires in the kernel without mxguard: blocked, then let
// through once the element's timeout ran out (the action is closed).
func TestNetnsNFTablesTimeout(t *testing.T) {
	server, client := nftPair(t)
	a := newNSNFT(t, server, DefaultNFTablesConfig())
	if err := a.Apply(context.Background(), testBan("192.0.2.2/32", 2*time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := nft(t, server, "list", "set", "inet", "mxguard", "banned_v4"); !strings.Contains(got, "192.0.2.2 timeout 2s") {
		t.Errorf("element without its timeout:\n%s", got)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout")
	time.Sleep(time.Until(start.Add(2500 * time.Millisecond)))
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	if got := nft(t, server, "list", "set", "inet", "mxguard", "banned_v4"); strings.Contains(got, "192.0.2.2") {
		t.Errorf("expired element still listed:\n%s", got)
	}
}

// Sync repairs what was flushed or deleted by hand, and an Apply that
// finds the table gone rebuilds it with every ban.
func TestNetnsNFTablesRepair(t *testing.T) {
	server, client := nftPair(t)
	ctx := context.Background()
	a := newNSNFT(t, server, DefaultNFTablesConfig())
	a.chunk = 7 // several transactions even for a few bans
	bans, _ := bulkBans(40)
	bans = append(bans, testBan("192.0.2.2/32", time.Hour), testBan("2001:db8::2/128", time.Hour))
	if err := a.Sync(ctx, bans); err != nil {
		t.Fatal(err)
	}
	count := func(set string) int {
		return strings.Count(nft(t, server, "list", "set", "inet", "mxguard", set), " expires ")
	}
	if n := count("banned_v4"); n != 41 {
		t.Errorf("after Sync: %d v4 elements, want 41", n)
	}
	blocked := func(why string) {
		t.Helper()
		t.Log("expect blocked " + why)
		netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout")
		netnstest.ExpectDial(t, client, "tcp6", "[2001:db8::1]:25", "timeout")
	}
	blocked("after Sync")

	nft(t, server, "flush", "set", "inet", "mxguard", "banned_v4")
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	// A stale element (not banned) is deleted, a wrong timeout renewed.
	nft(t, server, "add", "element", "inet", "mxguard", "banned_v4", "{ 203.0.113.0/24 }")
	nft(t, server, "delete", "element", "inet", "mxguard", "banned_v6", "{ 2001:db8::2 }")
	nft(t, server, "add", "element", "inet", "mxguard", "banned_v6", "{ 2001:db8::2 timeout 5s }")
	if err := a.Sync(ctx, bans); err != nil {
		t.Fatal(err)
	}
	blocked("after a flush and Sync")
	got := nft(t, server, "list", "set", "inet", "mxguard", "banned_v4")
	if strings.Contains(got, "203.0.113.0/24") || count("banned_v4") != 41 {
		t.Errorf("after Sync: stale element kept or elements missing:\n%s", got)
	}
	if got := nft(t, server, "list", "set", "inet", "mxguard", "banned_v6"); !regexp.MustCompile(`2001:db8::2 timeout (1h|59m)`).MatchString(got) {
		t.Errorf("timeout not renewed:\n%s", got)
	}

	// Rule deleted by hand: Sync puts it back.
	nft(t, server, "flush", "chain", "inet", "mxguard", "input")
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	if err := a.Sync(ctx, bans); err != nil {
		t.Fatal(err)
	}
	blocked("after the chain was flushed and Sync")

	// Table deleted by hand: the next Apply rebuilds everything.
	nft(t, server, "delete", "table", "inet", "mxguard")
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	if err := a.Apply(ctx, testBan("198.51.100.9/32", time.Hour)); err != nil {
		t.Fatal(err)
	}
	blocked("after the table was deleted and one Apply")
	if n := count("banned_v4"); n != 42 {
		t.Errorf("after the rebuild: %d v4 elements, want 42", n)
	}

	// A priority change in the config moves the chain.
	cfg := DefaultNFTablesConfig()
	cfg.Priority = -5
	b := newNSNFT(t, server, cfg)
	if err := b.Sync(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if got := nft(t, server, "list", "chain", "inet", "mxguard", "input"); !strings.Contains(got, "priority filter - 5") && !strings.Contains(got, "priority -5") {
		t.Errorf("chain not moved:\n%s", got)
	}
	blocked("after the priority change")
}

// Another table (the administrator's) is never touched, not even by
// Cleanup, which deletes ours. Our chain runs before the administrator's
// accept at priority 0.
func TestNetnsNFTablesCoexistAndCleanup(t *testing.T) {
	server, client := nftPair(t)
	ctx := context.Background()
	nftScript(t, server, `table inet admin {
	set trusted { type ipv4_addr; flags interval; elements = { 10.0.0.0/8 } }
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr @trusted accept
		tcp dport 25 accept
	}
}`)
	before := nft(t, server, "list", "table", "inet", "admin")
	a := newNSNFT(t, server, DefaultNFTablesConfig())
	if err := a.Sync(ctx, []ban.Ban{testBan("192.0.2.2/32", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout")
	// The daemon closes its actions before --cleanup runs.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	if got := nft(t, server, "list", "tables"); strings.TrimSpace(got) != "table inet admin" {
		t.Errorf("after Cleanup, tables:\n%s", got)
	}
	if after := nft(t, server, "list", "table", "inet", "admin"); after != before {
		t.Errorf("admin table changed:\n%s\n---\n%s", before, after)
	}
	// Cleanup of a table that is gone is not an error.
	if err := a.Cleanup(ctx); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// Own mode never adopts, repairs or deletes a table that is not
// mxguard's: with table: filter on a host whose ruleset is Debian's
// "table inet filter", Sync and Cleanup refuse and leave it as it was.
func TestNetnsNFTablesRefusesForeignTable(t *testing.T) {
	server, _ := nftPair(t)
	ctx := context.Background()
	nftScript(t, server, `table inet filter {
	set banned_v4 { type ipv4_addr; }
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 22 accept
	}
}`)
	before := nft(t, server, "list", "table", "inet", "filter")
	cfg := DefaultNFTablesConfig()
	cfg.Table = "filter"
	a, err := NewNFTables(cfg, NFTablesOptions{Dial: nsDial(server)})
	if err == nil {
		t.Cleanup(func() { a.Close() })
		err = a.Sync(ctx, []ban.Ban{testBan("192.0.2.2/32", time.Hour)})
		if cerr := a.Cleanup(ctx); cerr == nil {
			t.Error("Cleanup of a foreign table succeeded")
		}
	}
	if err == nil || !strings.Contains(err.Error(), "not mxguard's") {
		t.Errorf("own mode over a foreign table: err = %v, want a refusal", err)
	}
	if after := nft(t, server, "list", "table", "inet", "filter"); after != before {
		t.Errorf("the administrator's table changed:\n%s\n---\n%s", before, after)
	}
}

// Renaming set_v4/set_v6 leaves mxguard's old sets in its table: the
// table is still its own, repaired and removed as usual.
func TestNetnsNFTablesSetRenamed(t *testing.T) {
	server, client := nftPair(t)
	ctx := context.Background()
	old := newNSNFT(t, server, DefaultNFTablesConfig())
	if err := old.Sync(ctx, []ban.Ban{testBan("192.0.2.2/32", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	old.Close()
	cfg := DefaultNFTablesConfig()
	cfg.SetV4, cfg.SetV6 = "blocked_v4", "blocked_v6"
	a := newNSNFT(t, server, cfg)
	if err := a.Sync(ctx, []ban.Ban{testBan("192.0.2.2/32", time.Hour)}); err != nil {
		t.Fatalf("Sync after renaming the sets: %v", err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout")
	if err := a.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup after renaming the sets: %v", err)
	}
	if got := nft(t, server, "list", "tables"); strings.TrimSpace(got) != "" {
		t.Errorf("after Cleanup, tables:\n%s", got)
	}
}

// set_only: the administrator's sets (and rules) in the administrator's
// table; mxguard adds and deletes its elements only, leaves the
// administrator's elements alone, and Cleanup removes nothing else.
func TestNetnsNFTablesSetOnly(t *testing.T) {
	server, client := nftPair(t)
	ctx := context.Background()
	cfg := DefaultNFTablesConfig()
	cfg.SetOnly, cfg.Table, cfg.SetV4, cfg.SetV6 = true, "filter", "mxg4", "mxg6"

	// The sets must exist: New says which one is missing.
	_, err := NewNFTables(cfg, NFTablesOptions{Dial: nsDial(server)})
	if err == nil || !strings.Contains(err.Error(), "set mxg4 in table inet filter") {
		t.Fatalf("New without the sets: %v", err)
	}
	nftScript(t, server, `table inet filter {
	set mxg4 { type ipv4_addr; flags interval, timeout; elements = { 198.51.100.0/24, 192.0.2.128/25 } }
	set mxg6 { type ipv6_addr; flags interval, timeout; }
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr @mxg4 tcp dport 25 drop
		ip6 saddr @mxg6 tcp dport 25 drop
	}
}`)
	a := newNSNFT(t, server, cfg)
	if err := a.Apply(ctx, testBan("192.0.2.2/32", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, testBan("2001:db8::2/128", time.Hour)); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "timeout")
	netnstest.ExpectDial(t, client, "tcp6", "[2001:db8::1]:25", "timeout")
	// Sync: drops ours that are not banned, keeps the administrator's,
	// and leaves out a ban overlapping one of theirs.
	if err := a.Sync(ctx, []ban.Ban{testBan("2001:db8::2/128", time.Hour), testBan("192.0.2.130/32", time.Hour)}); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp4", "192.0.2.1:25", "ok")
	netnstest.ExpectDial(t, client, "tcp6", "[2001:db8::1]:25", "timeout")
	got := nft(t, server, "list", "set", "inet", "filter", "mxg4")
	if !strings.Contains(got, "198.51.100.0/24") || !strings.Contains(got, "192.0.2.128/25") || strings.Contains(got, "192.0.2.2") {
		t.Errorf("admin set after Sync:\n%s", got)
	}
	before := nft(t, server, "list", "chain", "inet", "filter", "input")
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectDial(t, client, "tcp6", "[2001:db8::1]:25", "ok")
	if got := nft(t, server, "list", "set", "inet", "filter", "mxg4"); !strings.Contains(got, "198.51.100.0/24") || !strings.Contains(got, "192.0.2.128/25") {
		t.Errorf("Cleanup removed the administrator's elements:\n%s", got)
	}
	if after := nft(t, server, "list", "chain", "inet", "filter", "input"); after != before {
		t.Errorf("Cleanup changed the administrator's chain:\n%s\n---\n%s", before, after)
	}
	if got := nft(t, server, "list", "tables"); strings.TrimSpace(got) != "table inet filter" {
		t.Errorf("set_only made a table:\n%s", got)
	}
}

// The probe leaves nothing behind; New fails when a set has the wrong
// type.
func TestNetnsNFTablesProbe(t *testing.T) {
	netnstest.Require(t, "nft")
	ns := netnstest.New(t)
	if err := netnstest.Do(ns, ProbeNFTables); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if got := nft(t, ns, "list", "ruleset"); strings.TrimSpace(got) != "" {
		t.Errorf("probe left:\n%s", got)
	}
	nftScript(t, ns, "table inet filter {\n set mxg4 { type inet_service; }\n}")
	cfg := DefaultNFTablesConfig()
	cfg.SetOnly, cfg.Table, cfg.SetV4, cfg.IPv6 = true, "filter", "mxg4", false
	_, err := NewNFTables(cfg, NFTablesOptions{Dial: nsDial(ns)})
	if err == nil || !strings.Contains(err.Error(), "has type inet_service, want ipv4_addr") {
		t.Errorf("New with a set of the wrong type: %v", err)
	}
}

// Sync with the default limits: several messages in one transaction, and
// every element arrives (an element list over 64 KiB in one message would
// be cut short by the kernel, silently). Without the larger send buffer
// the transaction is refused and the set is refilled in parts.
func TestNetnsNFTablesSyncLimits(t *testing.T) {
	netnstest.Require(t, "nft")
	for _, big := range []bool{true, false} {
		t.Run(map[bool]string{true: "one transaction", false: "default socket buffers"}[big], func(t *testing.T) {
			ns := netnstest.New(t)
			dial := nsDial(ns)
			if !big {
				plain := dial
				dial = func(...nftables.ConnOption) (*nftables.Conn, error) { return plain(nftables.AsLasting()) }
			}
			var logs bytes.Buffer
			a, err := NewNFTables(DefaultNFTablesConfig(), NFTablesOptions{Dial: dial, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			bans := append(benchBans(6000), benchBans6(6000)...)
			for range 2 { // into a new set, then replacing the content
				if err := a.Sync(context.Background(), bans); err != nil {
					t.Fatal(err)
				}
			}
			for _, set := range []string{"banned_v4", "banned_v6"} {
				if n := strings.Count(nft(t, ns, "list", "set", "inet", "mxguard", set), " expires "); n != 6000 {
					t.Errorf("%s holds %d elements, want 6000", set, n)
				}
			}
			if parts := strings.Contains(logs.String(), "refilling the set in parts"); parts == big {
				t.Errorf("refilled in parts: %v, want %v\n%s", parts, !big, logs.String())
			}
		})
	}
}
