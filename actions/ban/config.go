package ban

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/internal/duration"
)

// Duration is the config's duration ("1h", "30m", "7d"; see internal/duration).
type Duration = duration.Duration

// Config is the `ban:` section: how long bans last and how broad they may be.
type Config struct {
	// First ban duration. Default 1h.
	Base Duration `yaml:"base" json:"base"`
	// Each further offence multiplies the duration by Factor (>= 1). Default 2.
	Factor float64 `yaml:"factor" json:"factor"`
	// Cap on one ban's duration. Default 168h (7 days).
	Max Duration `yaml:"max" json:"max"`
	// Offences older than this no longer count towards escalation. Default 720h (30 days).
	ForgetAfter Duration `yaml:"forget_after" json:"forget_after"`
	// Ledger entries and offence histories older than this are pruned
	// (must be >= forget_after). Default 2160h (90 days).
	LedgerRetention Duration `yaml:"ledger_retention" json:"ledger_retention"`
	// Refuse IPv4 bans broader than /MaxPrefixV4. Default 24.
	MaxPrefixV4 int `yaml:"max_prefix_v4" json:"max_prefix_v4"`
	// Refuse IPv6 bans broader than /MaxPrefixV6. Default 48.
	MaxPrefixV6 int `yaml:"max_prefix_v6" json:"max_prefix_v6"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Base:            Duration(time.Hour),
		Factor:          2,
		Max:             Duration(7 * 24 * time.Hour),
		ForgetAfter:     Duration(30 * 24 * time.Hour),
		LedgerRetention: Duration(90 * 24 * time.Hour),
		MaxPrefixV4:     24,
		MaxPrefixV6:     48,
	}
}

// WithDefaults fills zero fields with the defaults.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Base == 0 {
		c.Base = d.Base
	}
	if c.Factor == 0 {
		c.Factor = d.Factor
	}
	if c.Max == 0 {
		c.Max = d.Max
	}
	if c.ForgetAfter == 0 {
		c.ForgetAfter = d.ForgetAfter
	}
	if c.LedgerRetention == 0 {
		c.LedgerRetention = d.LedgerRetention
	}
	if c.MaxPrefixV4 == 0 {
		c.MaxPrefixV4 = d.MaxPrefixV4
	}
	if c.MaxPrefixV6 == 0 {
		c.MaxPrefixV6 = d.MaxPrefixV6
	}
	return c
}

// Validate reports every problem (after WithDefaults).
func (c Config) Validate() error {
	var errs []error
	if c.Base <= 0 {
		errs = append(errs, fmt.Errorf("ban.base must be positive, got %s", c.Base))
	}
	if c.Factor < 1 || math.IsNaN(c.Factor) || math.IsInf(c.Factor, 0) {
		errs = append(errs, fmt.Errorf("ban.factor must be >= 1, got %v", c.Factor))
	}
	if c.Max < c.Base {
		errs = append(errs, fmt.Errorf("ban.max (%s) must be >= ban.base (%s)", c.Max, c.Base))
	}
	if c.ForgetAfter < 0 {
		errs = append(errs, fmt.Errorf("ban.forget_after must not be negative, got %s", c.ForgetAfter))
	}
	if c.LedgerRetention < c.ForgetAfter {
		errs = append(errs, fmt.Errorf("ban.ledger_retention (%s) must be >= ban.forget_after (%s)", c.LedgerRetention, c.ForgetAfter))
	}
	if c.MaxPrefixV4 < 1 || c.MaxPrefixV4 > 32 {
		errs = append(errs, fmt.Errorf("ban.max_prefix_v4 must be 1..32, got %d", c.MaxPrefixV4))
	}
	if c.MaxPrefixV6 < 1 || c.MaxPrefixV6 > 128 {
		errs = append(errs, fmt.Errorf("ban.max_prefix_v6 must be 1..128, got %d", c.MaxPrefixV6))
	}
	return errors.Join(errs...)
}

// Duration returns the ban duration for the given offence number (1 = first):
// Base × Factor^(offence-1), capped at Max.
func (c Config) Duration(offence int) time.Duration {
	if offence < 1 {
		offence = 1
	}
	d := float64(c.Base) * math.Pow(c.Factor, float64(offence-1))
	if d >= float64(c.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		return time.Duration(c.Max)
	}
	return time.Duration(d)
}

// ManagerConfig configures a Manager: Allowlist, Ban and DryRun come from
// the config file's top-level keys (see internal/config); the others are
// wiring and tuning (zero = default).
type ManagerConfig struct {
	Allowlist []string
	Ban       Config
	DryRun    bool

	// Now is the clock decisions and expiry are made by (default
	// time.Now). Replay sets it to the log time of each decision.
	Now func() time.Time
	// AllowSources add dynamic allowlist entries; default is
	// [HostAddrs]. Set to a non-nil empty slice to skip host addresses.
	AllowSources []func() ([]netip.Prefix, error)
	// SweepInterval: how often Run expires bans and refreshes the host
	// addresses (the ledger is pruned at most hourly). Default 30s.
	SweepInterval time.Duration
	// ActionTimeout bounds one Apply/Revoke/Sync call. Default 30s.
	ActionTimeout time.Duration
	// RetryBase and RetryMax bound the per-action retry backoff of failed
	// calls. Defaults 1s and 5m.
	RetryBase time.Duration
	RetryMax  time.Duration
	// PersistQueueMax bounds the prefixes whose decisions the store
	// refused (a full state_dir) and that are kept in memory, applied,
	// until it takes writes again (retried with the same backoff).
	// Default DefaultPersistQueueMax.
	PersistQueueMax int
}

func (c ManagerConfig) withDefaults() ManagerConfig {
	c.Ban = c.Ban.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.AllowSources == nil {
		c.AllowSources = []func() ([]netip.Prefix, error){HostAddrs}
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 30 * time.Second
	}
	if c.ActionTimeout <= 0 {
		c.ActionTimeout = 30 * time.Second
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.PersistQueueMax <= 0 {
		c.PersistQueueMax = DefaultPersistQueueMax
	}
	if c.RetryMax < c.RetryBase {
		c.RetryMax = c.RetryBase
	}
	return c
}
