// Package duration is the one duration type of mxguard's configuration:
// a Go duration string ("90s", "10m", "1h30m") or whole days ("7d"). A
// bare number other than 0 is an error (its unit would be a guess), and so
// is a negative duration.
package duration

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration as written in the config.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d without trailing zero units: "10m", "1h", "1h30m", "90s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// maxDays keeps n*24h inside time.Duration (about 292 years).
const maxDays = int64(math.MaxInt64 / int64(24*time.Hour))

// Parse reads a duration as the config writes it.
func Parse(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	var v time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int64
		n, err = strconv.ParseInt(days, 10, 32)
		if err == nil && (n > maxDays || n < -maxDays) {
			return 0, fmt.Errorf("duration %q is too long (at most %dd)", s, maxDays)
		}
		v = time.Duration(n) * 24 * time.Hour
	} else {
		v, err = time.ParseDuration(s)
	}
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 90s, 30m, 1h, 7d)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return Duration(v), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (JSON, flags).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText writes d as in String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalYAML accepts a scalar only and names the line of a bad value.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as \"10m\"", n.Line)
	}
	v, err := Parse(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes d as in String.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }
