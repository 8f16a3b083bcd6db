package firewall

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
)

// bulkBans returns n IPv4 bans and, when v6, one IPv6 ban, with the
// rules a DROP Sync must leave in each family's chain.
func bulkBans(n int) (bans []ban.Ban, rules4 []string) {
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32)
		bans = append(bans, ban.Ban{Prefix: p, Until: time.Now().Add(time.Hour)})
		rules4 = append(rules4, "-s "+p.String()+" -j DROP")
	}
	return bans, rules4
}

// TestIPTablesSyncBulk: Sync loads each family with at most one
// iptables-restore run and no per-rule command, whatever the chain held,
// keeps foreign rules, and prints the restore input in dry-run.
func TestIPTablesSyncBulk(t *testing.T) {
	bans, rules4 := bulkBans(2000)
	bans = append(bans, testBan("2001:db8::1/128", time.Hour))
	jump := "-p tcp -m multiport --dports 25,465,587 -j MXGUARD"
	foreign := "-p udp -j ACCEPT"
	setRule := "-m set --match-set mxguard-v4 src -j DROP"
	manyStale := make([]string, 1100) // 1100 deletes × 1100+ rules exceed specDeleteBudget
	for i := range manyStale {
		manyStale[i] = fmt.Sprintf("-s 203.0.%d.%d/32 -j DROP", i>>8, i&255)
	}
	cases := []struct {
		name     string
		chain    []string // nil: chain missing
		jump     bool
		restores int
		want     []string
		inInput  []string // lines the v4 restore input must contain
		notInput []string
	}{
		{name: "chain missing", restores: 1, want: rules4,
			inInput: []string{"*filter\n-N MXGUARD\n-A MXGUARD -s 198.18.0.0/32 -j DROP\n", "-I INPUT 1 " + jump + "\nCOMMIT\n"}},
		{name: "flushed", chain: []string{}, jump: true, restores: 1, want: rules4,
			notInput: []string{"-N MXGUARD", ":MXGUARD", "-I INPUT"}},
		{name: "in sync", chain: rules4, jump: true, restores: 0, want: rules4},
		{name: "jump missing", chain: rules4, restores: 1, want: rules4,
			inInput: []string{"*filter\n-I INPUT 1 " + jump + "\nCOMMIT\n"}},
		{name: "few stale, foreign kept in place",
			chain: append([]string{foreign, "-s 192.0.2.9/32 -j DROP", rules4[5], rules4[5], setRule}, rules4[:3]...),
			jump:  true, restores: 1,
			want:     append(append([]string{foreign, rules4[5], setRule}, rules4[:5]...), rules4[6:]...),
			inInput:  []string{"-D MXGUARD -s 192.0.2.9/32 -j DROP\n-D MXGUARD " + rules4[5] + "\n"},
			notInput: []string{":MXGUARD", foreign}},
		{name: "many stale: rewrite",
			chain: append(append(slices.Clone(manyStale), foreign, rules4[7]), setRule),
			jump:  true, restores: 1,
			want:     append(append([]string{foreign, rules4[7], setRule}, rules4[:7]...), rules4[8:]...),
			inInput:  []string{":MXGUARD - [0:0]\n-A MXGUARD " + foreign + "\n-A MXGUARD " + rules4[7] + "\n-A MXGUARD " + setRule + "\n"},
			notInput: []string{manyStale[0], "-D MXGUARD"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			a, m4, m6 := iptablesTestAction(t, "DROP", &out)
			if c.chain != nil {
				m4.chains["filter/MXGUARD"] = slices.Clone(c.chain)
			}
			if c.jump {
				m4.chains["filter/INPUT"] = []string{jump}
			}
			if err := a.Sync(context.Background(), bans); err != nil {
				t.Fatal(err)
			}
			if m4.restores != c.restores || m4.ruleCalls != 0 {
				t.Errorf("v4: %d restores and %d single-rule calls, want %d and 0", m4.restores, m4.ruleCalls, c.restores)
			}
			if m6.restores != 1 || m6.ruleCalls != 0 {
				t.Errorf("v6: %d restores and %d single-rule calls, want 1 and 0", m6.restores, m6.ruleCalls)
			}
			if got := m4.rules("filter", "MXGUARD"); !slices.Equal(got, c.want) {
				t.Errorf("v4 chain: %d rules, want %d; first difference at %d", len(got), len(c.want), firstDiff(got, c.want))
			}
			if got := m4.rules("filter", "INPUT"); !slices.Equal(got, []string{jump}) {
				t.Errorf("v4 INPUT: %q", got)
			}
			if got := m6.rules("filter", "MXGUARD"); !slices.Equal(got, []string{"-s 2001:db8::1/128 -j DROP"}) {
				t.Errorf("v6 chain: %q", got)
			}
			dry := out.String()
			v4input, _, _ := strings.Cut(dry, "ip6tables-restore")
			if c.restores > 0 && !strings.HasPrefix(v4input, "iptables-restore --noflush --wait=5 <<'EOF'\n*filter\n") {
				t.Errorf("dry-run does not show the restore command and input:\n%.300s", dry)
			}
			for _, s := range c.inInput {
				if !strings.Contains(v4input, s) {
					t.Errorf("restore input lacks %q:\n%.600s", s, v4input)
				}
			}
			for _, s := range c.notInput {
				if strings.Contains(v4input, s) {
					t.Errorf("restore input has %q:\n%.600s", s, v4input)
				}
			}
			if strings.Contains(dry, "-F ") || strings.Contains(dry, ":INPUT") {
				t.Errorf("restore input touches more than our chain and the jump:\n%.600s", dry)
			}
		})
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestIPTablesSyncBulkRetry: a failed load is retried once from a fresh
// listing, then reported with the program's message.
func TestIPTablesSyncBulkRetry(t *testing.T) {
	for _, failures := range []int{1, 2} {
		t.Run(fmt.Sprint(failures), func(t *testing.T) {
			a, m4, _ := iptablesTestAction(t, "DROP", nil)
			left := failures
			m4.fail = func(op, chain string, spec []string) error {
				if op == "-A" && left > 0 {
					left--
					return fmt.Errorf("boom")
				}
				return nil
			}
			err := a.Sync(context.Background(), []ban.Ban{testBan("192.0.2.8/32", time.Hour)})
			if failures == 1 && err != nil {
				t.Errorf("one failure not retried: %v", err)
			}
			if failures == 2 && (err == nil || !strings.Contains(err.Error(), "iptables-restore: line 3 failed: boom")) {
				t.Errorf("second failure not reported with the program's message: %v", err)
			}
			if m4.restores != 2 {
				t.Errorf("%d restores, want 2", m4.restores)
			}
			ok, _ := m4.Exists("filter", "MXGUARD", "-s", "192.0.2.8/32", "-j", "DROP")
			if ok != (failures == 1) {
				t.Errorf("rule present = %v after %d failures", ok, failures)
			}
		})
	}
}
