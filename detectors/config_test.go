package detectors

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func decodeStrict(t *testing.T, src string) (Config, error) {
	t.Helper()
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	err := dec.Decode(&cfg)
	return cfg, err
}

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(DefaultConfig(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestConfigYAML(t *testing.T) {
	cfg, err := decodeStrict(t, `
max_clients: 5000
dictionary: {threshold: 8, window: 15m}
sasl_bruteforce: {per_prefix: true, mode: warn}
prefix_escalation: {enabled: true, count: 4, window: 2h, v4_bits: 26}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.MaxClients = 5000
	want.Dictionary.Threshold = 8
	want.Dictionary.Window = Duration(15 * time.Minute)
	want.SASLBruteforce.PerPrefix = true
	want.SASLBruteforce.Mode = ModeWarn
	want.PrefixEscalation = EscalationConfig{Enabled: true, Count: 4, Window: Duration(2 * time.Hour), V4Bits: 26, V6Bits: 64, Mode: ModeBan}
	if cfg != want {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}

	// Round trip.
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "window: 15m\n") {
		t.Errorf("durations not written as strings:\n%s", buf.String())
	}
	back, err := decodeStrict(t, buf.String())
	if err != nil {
		t.Fatal(err)
	}
	if back != cfg {
		t.Errorf("round trip: got %+v", back)
	}
}

func TestConfigYAMLNewKeys(t *testing.T) {
	cfg, err := decodeStrict(t, `
dictionary: {per_prefix: false, prefix_threshold: 20, prefix_addresses: 4, prefix_window: 2h}
sasl_bruteforce: {long_threshold: 0}
flood: {threshold: 20, window: 2m, connect_drops_threshold: 60}
sasl_spray: {mode: warn}
score: {threshold: 12.5, half_life: 1h, class_cap: 3, weights: {no_helo: 5, hostname_mismatch: 0}}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Dictionary.PerPrefix, want.Dictionary.PrefixThreshold, want.Dictionary.PrefixAddresses = false, 20, 4
	want.Dictionary.PrefixWindow = Duration(2 * time.Hour)
	want.SASLBruteforce.LongThreshold = 0
	want.Flood.Threshold, want.Flood.Window, want.Flood.ConnectDropsThreshold = 20, Duration(2*time.Minute), 60
	want.SASLSpray.Mode = ModeWarn
	want.Score.Threshold, want.Score.HalfLife, want.Score.ClassCap = 12.5, Duration(time.Hour), 3
	want.Score.Weights.NoHelo, want.Score.Weights.HostnameMismatch = 5, 0
	if cfg != want {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	if _, err := decodeStrict(t, "score: {weights: {no_hello: 1}}"); err == nil || !strings.Contains(err.Error(), "no_hello") {
		t.Errorf("unknown weight: err %v", err)
	}
}

func TestConfigYAMLErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"dictionary: {treshold: 3}", "treshold"},
		{"dictionary: {window: 10}", `line 1: invalid duration "10"`},
		{"dictionary: {window: -1m}", "negative"},
		{"dictionary: {window: [1m]}", "want a duration"},
		{"sasl_bruteforce: {per_prefix: maybe}", "line 1: cannot unmarshal !!str `maybe` into bool"},
		{"foo: 1", "foo"},
	} {
		_, err := decodeStrict(t, tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want it to mention %q", tc.src, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Dictionary.Threshold = 0 }, "detectors.dictionary.threshold: must be ≥ 1"},
		{func(c *Config) { c.ErrorBurst.Window = 0 }, "detectors.error_burst.window: must be > 0"},
		{func(c *Config) { c.Pipelining.Mode = "block" }, `detectors.pipelining.mode: must be ban or warn, got "block"`},
		{func(c *Config) { c.Pregreet.Mode = "" }, `detectors.pregreet.mode`},
		{func(c *Config) { c.SASLBruteforce.PrefixThreshold = 0 }, "detectors.sasl_bruteforce.prefix_threshold"},
		{func(c *Config) { c.RelayProbe.Enabled = false; c.RelayProbe.Threshold = -1 }, "detectors.relay_probe.threshold"},
		{func(c *Config) { c.DNSBL.Rejects = 0 }, "detectors.dnsbl.rejects"},
		{func(c *Config) { c.BadHelo.Window = 0 }, "detectors.bad_helo.window"},
		{func(c *Config) { c.MaxClients = 0 }, "detectors.max_clients"},
		{func(c *Config) { c.EvidenceLines = -1 }, "detectors.evidence_lines"},
		{func(c *Config) { c.PrefixEscalation.Count = 1 }, "detectors.prefix_escalation.count"},
		{func(c *Config) { c.PrefixEscalation.Window = 0 }, "detectors.prefix_escalation.window"},
		{func(c *Config) { c.PrefixEscalation.V4Bits = 33 }, "detectors.prefix_escalation.v4_bits"},
		{func(c *Config) { c.PrefixEscalation.V6Bits = 8 }, "detectors.prefix_escalation.v6_bits"},
		{func(c *Config) { c.PrefixEscalation.Mode = "x" }, "detectors.prefix_escalation.mode"},
		{func(c *Config) { c.Flood.Threshold = 0 }, "detectors.flood.threshold: must be ≥ 1"},
		{func(c *Config) { c.AdminReject.Window = 0 }, "detectors.admin_reject.window"},
		{func(c *Config) { c.ContentReject.Mode = "drop" }, "detectors.content_reject.mode"},
		{func(c *Config) { c.SASLSpray.Threshold = 1 }, "detectors.sasl_spray.threshold: must be ≥ 2"},
		{func(c *Config) { c.SASLBruteforce.LongThreshold = -1 }, "detectors.sasl_bruteforce.long_threshold: must be ≥ 0"},
		{func(c *Config) { c.Dictionary.PrefixThreshold = 1 }, "detectors.dictionary.prefix_threshold"},
		{func(c *Config) { c.Dictionary.PrefixAddresses = 1 }, "detectors.dictionary.prefix_addresses"},
		{func(c *Config) { c.Dictionary.PrefixWindow = 0 }, "detectors.dictionary.prefix_window"},
		{func(c *Config) { c.Score.Threshold = 0 }, "detectors.score.threshold: must be > 0"},
		{func(c *Config) { c.Score.HalfLife = 0 }, "detectors.score.half_life"},
		{func(c *Config) { c.Score.ClassCap = 0.5 }, "detectors.score.class_cap"},
		{func(c *Config) { c.Score.Mode = "" }, "detectors.score.mode"},
		{func(c *Config) { c.Score.Weights.RelayDenied = -1 }, "detectors.score.weights.relay_denied: must be between 0 and 1000, got -1"},
		{func(c *Config) { c.Flood.ConnectDropsThreshold = 0 }, "detectors.flood.connect_drops_threshold: must be ≥ 1"},
		{func(c *Config) { c.Score.HalfLife = Duration(1 << 62) }, "detectors.score.half_life: must be at most 744h"},
		{func(c *Config) { c.BadHelo.Window = Duration(1 << 62) }, "detectors.bad_helo.window: must be at most 744h"},
		{func(c *Config) { c.SASLBruteforce.LongWindow = Duration(1 << 62) }, "detectors.sasl_bruteforce.long_window: must be at most"},
		{func(c *Config) { c.Dictionary.PrefixWindow = Duration(1 << 62) }, "detectors.dictionary.prefix_window: must be at most"},
		{func(c *Config) { c.PrefixEscalation.Window = Duration(1 << 62) }, "detectors.prefix_escalation.window: must be at most"},
	} {
		cfg := DefaultConfig()
		tc.mut(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err %v, want %q", err, tc.want)
		}
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New accepted a bad config (%s)", tc.want)
		}
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute: "10m", time.Hour: "1h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s",
		30 * time.Second: "30s", 0: "0s", 2*time.Hour + 5*time.Second: "2h0m5s",
	} {
		if got := Duration(d).String(); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
		var back Duration
		if err := back.UnmarshalText([]byte(Duration(d).String())); err != nil || back != Duration(d) {
			t.Errorf("%v: text round trip %v %v", d, back, err)
		}
	}
}

func TestConfigWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
		want []string // prefixes of the warnings
	}{
		{"defaults", func(*Config) {}, nil},
		{"long SASL window not longer", func(c *Config) { c.SASLBruteforce.LongWindow = Duration(5 * time.Minute) },
			[]string{"detectors.sasl_bruteforce.long_window: 5m is not longer than window 10m"}},
		{"long SASL threshold not above", func(c *Config) { c.SASLBruteforce.LongThreshold = 5 },
			[]string{"detectors.sasl_bruteforce.long_threshold: 5 is not above threshold 5"}},
		{"long SASL window off on purpose", func(c *Config) { c.SASLBruteforce.LongThreshold = 0 }, nil},
		{"score unreachable", func(c *Config) { c.Score.Threshold = 100 },
			[]string{"detectors.score.threshold: 100 is above the 55 all weighted classes can add"}},
		{"one class decides alone", func(c *Config) { c.Score.Weights.Pipelining = 5 },
			[]string{"detectors.score.weights.pipelining: 5 × class_cap 2 reaches threshold 10 alone"}},
		{"score off", func(c *Config) { c.Score.Enabled = false; c.Score.Threshold = 100 }, nil},
	} {
		cfg := DefaultConfig()
		tc.mut(&cfg)
		ws := cfg.Warnings()
		if len(ws) != len(tc.want) {
			t.Errorf("%s: warnings %q, want %q", tc.name, ws, tc.want)
			continue
		}
		for i := range ws {
			if !strings.HasPrefix(ws[i], tc.want[i]) {
				t.Errorf("%s: warning %q, want %q…", tc.name, ws[i], tc.want[i])
			}
		}
	}
}
