package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/smtpguard"
)

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mxguard.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown top", "logs: [/var/log/mail.log]\nbogus: 1\n",
			[]string{`line 2: unknown key "bogus" at the top level`}},
		{"unknown nested", "detectors:\n  dictionary:\n    threshold: 3\n    bogus: 1\n",
			[]string{`line 4: unknown key "bogus" in detectors.dictionary`}},
		{"typo hint", "detectors:\n  dictionary:\n    treshold: 3\n",
			[]string{`line 3: unknown key "treshold" in detectors.dictionary (did you mean "threshold"?)`}},
		{"inline keys", "actions:\n  ipset:\n    enabled: true\n    chain: X\n    nope: 1\n",
			[]string{`line 5: unknown key "nope" in actions.ipset`}},
		{"two unknown", "foo: 1\ntail:\n  pol: true\n",
			[]string{`line 1: unknown key "foo"`, `line 3: unknown key "pol" in tail (did you mean "poll"?)`}},
		{"bad values", "logs: [relative.log]\nlog_format: xml\ndetectors:\n  dictionary:\n    threshold: 0\nallowlist: [nonsense]\nban:\n  factor: 0.5\nmetrics_listen: nohostport\n",
			[]string{`logs[0]: "relative.log": want an absolute path`, `log_format: "xml"`,
				`detectors.dictionary.threshold: must be ≥ 1`, `allowlist[0]:`, `ban.factor must be >= 1`, `metrics_listen: "nohostport"`}},
		{"bad duration", "detectors:\n  dictionary:\n    window: 10\n", []string{`line 3:`, `(key detectors.dictionary.window)`}},
		{"duration above the maximum", "ban:\n  max: 213504d\n",
			[]string{`line 2: duration "213504d" is too long (at most 106751d) (key ban.max)`}},
		{"duration overflow", "tail:\n  checkpoint_interval: 2562048h\n",
			[]string{`line 2: duration "2562048h" is too long (at most 106751d) (key tail.checkpoint_interval)`}},
		{"duration beyond int64", "detectors:\n  dictionary:\n    window: 99999999999999999999d\n",
			[]string{`line 3: duration "99999999999999999999d" is too long (at most 106751d) (key detectors.dictionary.window)`}},
		{"unknown guard key", "guard:\n  limits:\n    max_conections: 5\n",
			[]string{`line 3: unknown key "max_conections" in guard.limits (did you mean "max_connections"?)`}},
		{"bad guard duration", "guard:\n  greylist:\n    delay: 5\n", []string{`line 3: invalid duration "5"`, `(key guard.greylist.delay)`}},
		{"guard values", "guard:\n  handoff: smoke\n  limits: {max_line_length: 100}\n",
			[]string{`guard.handoff: want xclient or proxy, got "smoke"`, `guard.limits.max_line_length: must be ≥ 512`}},
		{"journal spec", "logs:\n  - /var/log/mail.log\n  - journal:postfix/smtpd,\n",
			[]string{`line 3: logs[1]: "journal:postfix/smtpd,": empty identifier`}},
		{"journal twice", "logs:\n  - journal\n  - journal:postfix-in/\n",
			[]string{`line 3: logs[1]: "journal:postfix-in/": the journal is listed twice`}},
		{"journal typo", "logs: [journald]\n", []string{`line 1: logs[0]: "journald": want an absolute path, journal or journal:ID1,ID2`}},
		{"type error", "dry_run: maybe\n", []string{`line 1:`, `maybe`}},
		{"not a mapping", "- a\n- b\n", []string{`want a mapping`}},
		{"chain clash", "actions:\n  iptables: {enabled: true}\n  ipset: {enabled: true}\n", []string{`actions.ipset.chain: "MXGUARD" is also actions.iptables.chain`}},
		{"action values", "actions:\n  postfix_access: {path: relative, type: btree}\n  iptables: {target: ACCEPT}\n",
			[]string{`actions.postfix_access.path "relative"`, `actions.postfix_access.type "btree"`, `actions.iptables.target "ACCEPT"`}},
		{"nftables values", "actions:\n  nftables: {target: ACCEPT, family: ip, ports: [25, 25]}\n",
			[]string{`actions.nftables.target "ACCEPT"`, `actions.nftables.family "ip"`, `actions.nftables.ports: 25 listed twice`}},
		{"kill_sessions without ports", "actions:\n  kill_sessions: {ports: []}\n", []string{`actions.kill_sessions.ports: empty`}},
		{"kill_sessions bad port", "actions:\n  kill_sessions: {ports: [25, 70000]}\n", []string{`actions.kill_sessions.ports: 70000 is not a TCP port`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, tc.yaml)
			_, err := Load(p)
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tc.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config "+p+": ") {
				t.Errorf("error does not name the file: %v", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not contain %q", msg, w)
				}
			}
		})
	}
}

func TestLoadOverDefaults(t *testing.T) {
	p := write(t, "logs: [/tmp/a.log, /tmp/b.log]\ndetectors:\n  dictionary:\n    threshold: 3\nban:\n  base: 2h\ntail:\n  checkpoint_interval: 1s\nguard:\n  listen: \":25\"\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Logs) != 2 || c.Detectors.Dictionary.Threshold != 3 || !c.Detectors.Dictionary.Enabled {
		t.Errorf("logs/detectors not merged over defaults: %+v %+v", c.Logs, c.Detectors.Dictionary)
	}
	if c.Detectors.Dictionary.Window != detectors.DefaultConfig().Dictionary.Window {
		t.Errorf("absent key lost its default: %v", c.Detectors.Dictionary.Window)
	}
	if time.Duration(c.Ban.Base) != 2*time.Hour || c.Ban.Factor != 2 {
		t.Errorf("ban = %+v", c.Ban)
	}
	if !c.Tail.FromEnd || c.Tail.CheckpointInterval.D() != time.Second {
		t.Errorf("tail = %+v", c.Tail)
	}
	if c.Guard.Listen != ":25" || c.Guard.Upstream != smtpguard.DefaultConfig().Upstream || c.Guard.Limits.MaxConnections != 2000 {
		t.Errorf("guard not decoded over its defaults: %+v", c.Guard)
	}
}

func TestDefaultsValidAndRoundTrip(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"logs:", "state_dir:", "control_socket:", "dry_run:", "allowlist:", "detectors:",
		"actions:", "iptables:", "ipset:", "postfix_access:", "guard:", "metrics_listen:", "ban:", "tail:"} {
		if !strings.Contains(string(out), key) {
			t.Errorf("effective config lacks %s:\n%s", key, out)
		}
	}
	// What config check prints loads back to the same config.
	c2, err := Load(write(t, string(out)))
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}
	out2, _ := c2.Marshal()
	if string(out) != string(out2) {
		t.Errorf("round trip differs:\n%s\n---\n%s", out, out2)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, s := range []string{"", "# only a comment\n", "---\n"} {
		c, err := Load(write(t, s))
		if err != nil || c.StateDir != "/var/lib/mxguard" {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestExampleConfig(t *testing.T) {
	p := filepath.Join("..", "..", "etc", "mxguard.example.yaml")
	if _, err := os.Stat(p); err != nil {
		t.Skip("no example config yet")
	}
	c, err := Load(p)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	// The example documents every key: its effective config equals the
	// defaults apart from the values it deliberately changes.
	b, _ := os.ReadFile(p)
	def, _ := Default().Marshal()
	for _, line := range strings.Split(string(def), "\n") {
		key, _, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || key == "" || strings.HasPrefix(key, "-") {
			continue
		}
		if !strings.Contains(string(b), key+":") {
			t.Errorf("example config does not mention key %q", key)
		}
	}
	_ = c
}

// The guard's greylist database follows state_dir unless it is named; an
// empty guard section keeps every default.
func TestGuardConfig(t *testing.T) {
	tests := []struct {
		yaml, db string
	}{
		{"state_dir: /srv/mxguard\n", "/srv/mxguard/greylist.db"},
		{"state_dir: /srv/mxguard\nguard:\n", "/srv/mxguard/greylist.db"},
		{"guard: {greylist: {db: /var/cache/grey.db}}\n", "/var/cache/grey.db"},
		{"", "/var/lib/mxguard/greylist.db"},
	}
	for _, tc := range tests {
		c, err := Load(write(t, tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		g := c.GuardConfig()
		if g.Greylist.DB != tc.db {
			t.Errorf("%q: greylist.db = %q, want %q", tc.yaml, g.Greylist.DB, tc.db)
		}
		if g.Listen != ":25" || g.GreetPause != smtpguard.DefaultConfig().GreetPause {
			t.Errorf("%q: defaults lost: %+v", tc.yaml, g)
		}
		out, err := c.Marshal()
		if err != nil || !strings.Contains(string(out), "    db: "+tc.db+"\n") {
			t.Errorf("%q: config check output lacks the greylist db (%v):\n%s", tc.yaml, err, out)
		}
	}
}

func TestLoadJournalLogs(t *testing.T) {
	p := write(t, "logs:\n  - /var/log/mail.log\n  - journal:postfix/smtpd,postfix-in/\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Logs) != 2 || c.Logs[1] != "journal:postfix/smtpd,postfix-in/" {
		t.Errorf("logs = %q", c.Logs)
	}
}
