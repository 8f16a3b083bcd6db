package detectors

import (
	"errors"
	"fmt"
	"time"

	"github.com/mxguard/mxguard/internal/duration"
)

// Detector names, as used in the config, in Decision.Detector and in Stats.
const (
	Dictionary     = "dictionary"
	ErrorBurst     = "error_burst"
	Pipelining     = "pipelining"
	Pregreet       = "pregreet"
	SASLBruteforce = "sasl_bruteforce"
	RelayProbe     = "relay_probe"
	DNSBL          = "dnsbl"
	BadHelo        = "bad_helo"
	// PrefixEscalation is the Decision.Detector of a decision made for a
	// whole prefix because several of its addresses were decided.
	PrefixEscalation = "prefix_escalation"
)

// Names lists the detector names in a fixed order (without
// PrefixEscalation, which is not a detector of its own).
func Names() []string {
	return []string{Dictionary, ErrorBurst, Pipelining, Pregreet, SASLBruteforce, RelayProbe, DNSBL, BadHelo}
}

// Mode says what a detector's decisions are for.
type Mode string

const (
	ModeBan  Mode = "ban"  // the decision asks for a ban
	ModeWarn Mode = "warn" // the decision is only logged (Decision.Warn)
)

// Duration is the config's duration ("10m", "1h", "7d"; see internal/duration).
type Duration = duration.Duration

// Rule is the part of a detector's configuration that every detector has.
//
// A detector decides when Threshold events of its kind from one client fall
// within Window. After a decision the detector stays quiet for that client
// for one Window (the ban manager handles repeat offenders).
type Rule struct {
	Enabled   bool     `yaml:"enabled" json:"enabled"`
	Threshold int      `yaml:"threshold" json:"threshold"`
	Window    Duration `yaml:"window" json:"window"`
	Mode      Mode     `yaml:"mode" json:"mode"` // ban | warn
}

// SASLRule configures sasl_bruteforce.
type SASLRule struct {
	Rule `yaml:",inline"`
	// PerPrefix also counts failures across all addresses of one prefix
	// (prefix_escalation.v4_bits / v6_bits, default /24 and /64) and
	// decides for the prefix at PrefixThreshold failures within Window.
	// Default: false.
	PerPrefix bool `yaml:"per_prefix" json:"per_prefix"`
	// PrefixThreshold is the failure count for PerPrefix. Default: 10.
	PrefixThreshold int `yaml:"prefix_threshold" json:"prefix_threshold"`
	// CountDisconnectAuth counts failed AUTH commands from the statistics
	// of "disconnect from" lines (auth=0/3 is 3 failures). Postfix logs
	// both a SASL warning and the statistic for the same failure, so turn
	// this on only when the SASL warnings are not in the log. Default: false.
	CountDisconnectAuth bool `yaml:"count_disconnect_auth" json:"count_disconnect_auth"`
}

// DNSBLRule configures dnsbl. Threshold is the postscreen DNSBL rank that
// decides at once; Rejects is how many smtpd "blocked using" rejects
// within Window decide.
type DNSBLRule struct {
	Rule    `yaml:",inline"`
	Rejects int `yaml:"rejects" json:"rejects"` // Default: 1.
}

// EscalationConfig configures prefix escalation: when Count distinct
// addresses of one prefix are decided (in ban mode) within Window, the
// engine also decides for the prefix.
type EscalationConfig struct {
	Enabled bool     `yaml:"enabled" json:"enabled"` // Default: false.
	Count   int      `yaml:"count" json:"count"`     // Default: 5.
	Window  Duration `yaml:"window" json:"window"`   // Default: 1h.
	V4Bits  int      `yaml:"v4_bits" json:"v4_bits"` // Default: 24.
	V6Bits  int      `yaml:"v6_bits" json:"v6_bits"` // Default: 64.
	Mode    Mode     `yaml:"mode" json:"mode"`       // Default: ban.
}

// Config is the `detectors:` section of the mxguard config.
type Config struct {
	Dictionary     Rule      `yaml:"dictionary" json:"dictionary"`
	ErrorBurst     Rule      `yaml:"error_burst" json:"error_burst"`
	Pipelining     Rule      `yaml:"pipelining" json:"pipelining"`
	Pregreet       Rule      `yaml:"pregreet" json:"pregreet"`
	SASLBruteforce SASLRule  `yaml:"sasl_bruteforce" json:"sasl_bruteforce"`
	RelayProbe     Rule      `yaml:"relay_probe" json:"relay_probe"`
	DNSBL          DNSBLRule `yaml:"dnsbl" json:"dnsbl"`
	BadHelo        Rule      `yaml:"bad_helo" json:"bad_helo"`

	// MaxClients caps the tracked addresses (and, separately, the tracked
	// prefixes); the least recently seen are dropped first. Default: 100000.
	MaxClients int `yaml:"max_clients" json:"max_clients"`
	// EvidenceLines is how many raw log lines a Decision keeps. Default: 5.
	EvidenceLines    int              `yaml:"evidence_lines" json:"evidence_lines"`
	PrefixEscalation EscalationConfig `yaml:"prefix_escalation" json:"prefix_escalation"`
}

func rule(threshold int, window time.Duration) Rule {
	return Rule{Enabled: true, Threshold: threshold, Window: Duration(window), Mode: ModeBan}
}

// DefaultConfig returns the defaults. Decode YAML into it so that keys left
// out keep their default.
func DefaultConfig() Config {
	return Config{
		Dictionary:     rule(5, 10*time.Minute),
		ErrorBurst:     rule(6, 5*time.Minute),
		Pipelining:     rule(1, time.Hour),
		Pregreet:       rule(1, time.Hour),
		SASLBruteforce: SASLRule{Rule: rule(5, 10*time.Minute), PrefixThreshold: 10},
		RelayProbe:     rule(3, time.Hour),
		DNSBL:          DNSBLRule{Rule: rule(3, time.Hour), Rejects: 1},
		BadHelo:        rule(2, time.Hour),
		MaxClients:     100000,
		EvidenceLines:  5,
		PrefixEscalation: EscalationConfig{
			Count: 5, Window: Duration(time.Hour), V4Bits: 24, V6Bits: 64, Mode: ModeBan,
		},
	}
}

func (r Rule) validate(name string) error {
	var errs []error
	if r.Threshold < 1 {
		errs = append(errs, fmt.Errorf("detectors.%s.threshold: must be ≥ 1, got %d", name, r.Threshold))
	}
	if r.Window <= 0 {
		errs = append(errs, fmt.Errorf("detectors.%s.window: must be > 0, got %s", name, r.Window))
	}
	if err := r.Mode.validate("detectors." + name + ".mode"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m Mode) validate(key string) error {
	if m != ModeBan && m != ModeWarn {
		return fmt.Errorf("%s: must be ban or warn, got %q", key, string(m))
	}
	return nil
}

// Validate checks every value and names the bad keys, e.g.
// "detectors.dictionary.threshold: must be ≥ 1, got 0". Disabled detectors
// are checked too.
func (c Config) Validate() error {
	errs := []error{
		c.Dictionary.validate(Dictionary),
		c.ErrorBurst.validate(ErrorBurst),
		c.Pipelining.validate(Pipelining),
		c.Pregreet.validate(Pregreet),
		c.SASLBruteforce.validate(SASLBruteforce),
		c.RelayProbe.validate(RelayProbe),
		c.DNSBL.validate(DNSBL),
		c.BadHelo.validate(BadHelo),
	}
	if c.SASLBruteforce.PrefixThreshold < 1 {
		errs = append(errs, fmt.Errorf("detectors.sasl_bruteforce.prefix_threshold: must be ≥ 1, got %d", c.SASLBruteforce.PrefixThreshold))
	}
	if c.DNSBL.Rejects < 1 {
		errs = append(errs, fmt.Errorf("detectors.dnsbl.rejects: must be ≥ 1, got %d", c.DNSBL.Rejects))
	}
	if c.MaxClients < 1 {
		errs = append(errs, fmt.Errorf("detectors.max_clients: must be ≥ 1, got %d", c.MaxClients))
	}
	if c.EvidenceLines < 0 || c.EvidenceLines > 100 {
		errs = append(errs, fmt.Errorf("detectors.evidence_lines: must be between 0 and 100, got %d", c.EvidenceLines))
	}
	p := c.PrefixEscalation
	if p.Count < 2 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.count: must be ≥ 2, got %d", p.Count))
	}
	if p.Window <= 0 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.window: must be > 0, got %s", p.Window))
	}
	if p.V4Bits < 8 || p.V4Bits > 32 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.v4_bits: must be between 8 and 32, got %d", p.V4Bits))
	}
	if p.V6Bits < 16 || p.V6Bits > 128 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.v6_bits: must be between 16 and 128, got %d", p.V6Bits))
	}
	if err := p.Mode.validate("detectors.prefix_escalation.mode"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
