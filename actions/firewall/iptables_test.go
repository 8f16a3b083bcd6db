package firewall

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
)

// iptablesTestAction builds an IPTables action on the in-memory backend.
func iptablesTestAction(t *testing.T, target string, w *bytes.Buffer) (*IPTables, *iptablesMemory, *iptablesMemory) {
	t.Helper()
	cfg := DefaultIPTablesConfig()
	cfg.Target = target
	if w == nil {
		w = &bytes.Buffer{}
	}
	a, err := NewIPTables(cfg, IPTablesOptions{DryRun: w})
	if err != nil {
		t.Fatal(err)
	}
	return a, a.c.v4.be.(*iptablesMemory), a.c.v6.be.(*iptablesMemory)
}

func TestIPTablesConfigValidate(t *testing.T) {
	cases := []struct {
		mod  func(*IPTablesChainConfig)
		want string
	}{
		{func(*IPTablesChainConfig) {}, ""},
		{func(c *IPTablesChainConfig) { c.Target = "reject" }, ""},
		{func(c *IPTablesChainConfig) { c.Target = "ACCEPT" }, "target"},
		{func(c *IPTablesChainConfig) { c.Chain = "bad chain;rm" }, "chain"},
		{func(c *IPTablesChainConfig) { c.Ports = []int{0} }, "not a TCP port"},
		{func(c *IPTablesChainConfig) { c.Ports = make([]int, 16) }, "at most 15"},
		{func(c *IPTablesChainConfig) { c.Parent = "MXGUARD" }, "both"},
		{func(c *IPTablesChainConfig) { c.WaitSeconds = -1 }, "wait_seconds"},
	}
	for i, c := range cases {
		cfg := DefaultIPTablesChainConfig()
		c.mod(&cfg)
		cfg.Target = strings.ToUpper(cfg.Target)
		err := cfg.Validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("case %d: Validate = %v, want %q", i, err, c.want)
		}
	}
}

func TestIPTablesRuleSpec(t *testing.T) {
	cases := []struct{ target, prefix, want string }{
		{"DROP", "192.0.2.1/32", "-s 192.0.2.1/32 -j DROP"},
		{"REJECT", "2001:db8::/48", "-s 2001:db8::/48 -p tcp -j REJECT --reject-with tcp-reset"},
	}
	for _, c := range cases {
		a, _, _ := iptablesTestAction(t, c.target, nil)
		if got := strings.Join(a.c.ruleSpec(c.prefix), " "); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.target, c.prefix, got, c.want)
		}
	}
}

func TestIPTablesMemory(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	a, m4, m6 := iptablesTestAction(t, "DROP", &out)
	if err := a.Apply(ctx, testBan("192.0.2.1/32", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, testBan("192.0.2.1/32", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, testBan("2001:db8::1/128", time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantOut := strings.Join([]string{
		"iptables -t filter -N MXGUARD",
		"iptables -t filter -I INPUT 1 -p tcp -m multiport --dports 25,465,587 -j MXGUARD",
		"iptables -t filter -A MXGUARD -s 192.0.2.1/32 -j DROP",
		"ip6tables -t filter -N MXGUARD",
		"ip6tables -t filter -I INPUT 1 -p tcp -m multiport --dports 25,465,587 -j MXGUARD",
		"ip6tables -t filter -A MXGUARD -s 2001:db8::1/128 -j DROP",
	}, "\n") + "\n"
	if out.String() != wantOut {
		t.Errorf("dry-run output:\n%s\nwant:\n%s", out.String(), wantOut)
	}

	// Sync: keep the wanted, drop stale and duplicate, leave foreign rules.
	m4.chains["filter/MXGUARD"] = append(m4.chains["filter/MXGUARD"],
		"-s 198.51.100.1/32 -j DROP", "-s 192.0.2.1/32 -j DROP", "-p udp -j ACCEPT",
		"-m set --match-set mxguard-v4 src -j DROP")
	active := []ban.Ban{
		testBan("192.0.2.1/32", time.Hour),
		testBan("203.0.113.0/24", time.Hour),
		testBan("203.0.113.9/32", -time.Hour), // expired: not added
		testBan("2001:db8::1/128", time.Hour),
	}
	if err := a.Sync(ctx, active); err != nil {
		t.Fatal(err)
	}
	want4 := []string{"-s 192.0.2.1/32 -j DROP", "-p udp -j ACCEPT", "-m set --match-set mxguard-v4 src -j DROP", "-s 203.0.113.0/24 -j DROP"}
	if got := m4.rules("filter", "MXGUARD"); !slices.Equal(got, want4) {
		t.Errorf("v4 after Sync:\n%q\nwant\n%q", got, want4)
	}
	if got := m6.rules("filter", "MXGUARD"); !slices.Equal(got, []string{"-s 2001:db8::1/128 -j DROP"}) {
		t.Errorf("v6 after Sync: %q", got)
	}
	// Heal a deleted chain and jump.
	delete(m6.chains, "filter/MXGUARD")
	m6.chains["filter/INPUT"] = nil
	if err := a.Sync(ctx, active); err != nil {
		t.Fatal(err)
	}
	if got := m6.rules("filter", "INPUT"); len(got) != 1 || !strings.HasSuffix(got[0], "-j MXGUARD") {
		t.Errorf("jump not healed: %q", got)
	}
	if got := m6.rules("filter", "MXGUARD"); !slices.Equal(got, []string{"-s 2001:db8::1/128 -j DROP"}) {
		t.Errorf("v6 not healed: %q", got)
	}
	// Revoke is idempotent.
	for range 2 {
		if err := a.Revoke(ctx, netip.MustParsePrefix("203.0.113.0/24")); err != nil {
			t.Fatal(err)
		}
	}
	if got := m4.rules("filter", "MXGUARD"); slices.Contains(got, "-s 203.0.113.0/24 -j DROP") {
		t.Errorf("after Revoke: %q", got)
	}
	if err := a.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m4.ChainExists("filter", "MXGUARD"); ok {
		t.Error("chain left after Cleanup")
	}
	if got := m4.rules("filter", "INPUT"); len(got) != 0 {
		t.Errorf("jump left after Cleanup: %q", got)
	}
}

func TestIPTablesErrors(t *testing.T) {
	ctx := context.Background()
	a, m4, _ := iptablesTestAction(t, "DROP", nil)
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("::ffff:1.2.3.4/128")} {
		if err := a.Apply(ctx, ban.Ban{Prefix: p, Until: time.Now().Add(time.Hour)}); !errors.Is(err, ban.ErrInvalidPrefix) {
			t.Errorf("Apply(%v) = %v, want invalid prefix", p, err)
		}
		if err := a.Revoke(ctx, p); !errors.Is(err, ban.ErrInvalidPrefix) {
			t.Errorf("Revoke(%v) = %v, want invalid prefix", p, err)
		}
	}
	m4.fail = func(op, chain string, spec []string) error {
		if op == "-A" {
			return errors.New("boom")
		}
		return nil
	}
	err := a.Apply(ctx, testBan("192.0.2.7/32", time.Hour))
	if err == nil || !strings.Contains(err.Error(), "iptables -t filter -A MXGUARD -s 192.0.2.7/32 -j DROP") {
		t.Errorf("failed Apply does not name the rule: %v", err)
	}
	if err := a.Sync(ctx, []ban.Ban{testBan("192.0.2.8/32", time.Hour)}); err == nil || !strings.Contains(err.Error(), "-s 192.0.2.8/32") {
		t.Errorf("failed Sync does not name the rule: %v", err)
	}
	v4only := DefaultIPTablesConfig()
	v4only.IPv6 = false
	b, err := NewIPTables(v4only, IPTablesOptions{DryRun: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, testBan("2001:db8::1/128", time.Hour)); err == nil || !strings.Contains(err.Error(), "IPv6 is disabled") {
		t.Errorf("IPv6 with ipv6: false: %v", err)
	}
}

func TestIPSetDryRun(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, err := NewIPSet(DefaultIPSetConfig(), IPSetOptions{DryRun: &out, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bans := []ban.Ban{
		{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Until: now.Add(90*time.Second + time.Millisecond)},
		{Prefix: netip.MustParsePrefix("2001:db8::/48"), Until: now.Add(1000 * 24 * time.Hour)},
		{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Until: now.Add(-time.Second)}, // expired
		{Prefix: netip.MustParsePrefix("198.51.100.2/32")},                               // no expiry
	}
	if err := a.Sync(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, bans[0]); err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, bans[0].Prefix); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"ipset -exist restore <<'EOF'\ncreate mxguard-v4 hash:net family inet hashsize 65536 maxelem 1048576 timeout 0\n",
		"create mxguard-v4-new hash:net family inet hashsize 65536 maxelem 1048576 timeout 0\nflush mxguard-v4-new\n" +
			"add mxguard-v4-new 192.0.2.1/32 timeout 91\nadd mxguard-v4-new 198.51.100.2/32 timeout 0\n" +
			"swap mxguard-v4-new mxguard-v4\ndestroy mxguard-v4-new\n",
		"add mxguard-v6-new 2001:db8::/48 timeout 0\n", // longer than the kernel allows: no kernel expiry, the manager revokes it
		"iptables -t filter -A MXGUARD -m set --match-set mxguard-v4 src -j DROP\n",
		"ip6tables -t filter -A MXGUARD -m set --match-set mxguard-v6 src -j DROP\n",
		"ipset add mxguard-v4 192.0.2.1/32 timeout 91 -exist\n",
		"ipset del mxguard-v4 192.0.2.1/32 -exist\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "198.51.100.1") {
		t.Errorf("expired ban in output:\n%s", got)
	}
}
