package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/detectors"
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
		{"type error", "dry_run: maybe\n", []string{`line 1:`, `maybe`}},
		{"not a mapping", "- a\n- b\n", []string{`want a mapping`}},
		{"chain clash", "actions:\n  iptables: {enabled: true}\n  ipset: {enabled: true}\n", []string{`actions.ipset.chain: "MXGUARD" is also actions.iptables.chain`}},
		{"action values", "actions:\n  postfix_access: {path: relative, type: btree}\n  iptables: {target: ACCEPT}\n",
			[]string{`actions.postfix_access.path "relative"`, `actions.postfix_access.type "btree"`, `actions.iptables.target "ACCEPT"`}},
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
	var g struct {
		Listen string `yaml:"listen"`
	}
	if err := c.DecodeGuard(&g); err != nil || g.Listen != ":25" {
		t.Errorf("DecodeGuard = %v, %+v", err, g)
	}
	var strict struct {
		Upstream string `yaml:"upstream"`
	}
	if err := c.DecodeGuard(&strict); err == nil || !strings.Contains(err.Error(), `unknown key "listen" in guard`) {
		t.Errorf("DecodeGuard strict: %v", err)
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
