package detectors

import (
	"testing"
	"time"
)

func TestLongestWindow(t *testing.T) {
	tests := []struct {
		name  string
		tweak func(*Config)
		want  time.Duration
	}{
		{"defaults: sasl_bruteforce's long window", func(*Config) {}, 6 * time.Hour},
		{"without the long window: four half-lives of score", func(c *Config) { c.SASLBruteforce.LongThreshold = 0 }, 2 * time.Hour},
		{"without long window and score", func(c *Config) { c.SASLBruteforce.LongThreshold = 0; c.Score.Enabled = false }, time.Hour},
		{"a longer enabled window", func(c *Config) { c.Dictionary.Window = Duration(8 * time.Hour) }, 8 * time.Hour},
		{"a longer disabled window", func(c *Config) {
			c.Dictionary.Window = Duration(8 * time.Hour)
			c.Dictionary.Enabled = false
		}, 6 * time.Hour},
		{"prefix escalation", func(c *Config) {
			c.PrefixEscalation.Enabled = true
			c.PrefixEscalation.Window = Duration(24 * time.Hour)
		}, 24 * time.Hour},
	}
	for _, tc := range tests {
		cfg := DefaultConfig()
		tc.tweak(&cfg)
		e, err := New(cfg, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := e.LongestWindow(); got != tc.want {
			t.Errorf("%s: LongestWindow = %s, want %s", tc.name, got, tc.want)
		}
	}
}
