// Package duration is the one duration type of mxguard's configuration:
// a Go duration string ("90s", "10m", "1h30m") or whole days ("7d"). A
// bare number other than 0 is an error (its unit would be a guess), and so
// is a negative duration or one longer than Max.
package duration

import (
	"errors"
	"fmt"
	"math"
	"regexp"
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

// Max is the longest duration accepted, in any form: 106751d (about 292
// years, the whole days a time.Duration holds). Anything longer would wrap
// around, so it is refused with an error naming this maximum.
const Max = Duration(maxDays * int64(24*time.Hour))

// goDuration is the syntax of time.ParseDuration. A string of this form
// that time.ParseDuration refuses overflowed time.Duration.
var goDuration = regexp.MustCompile(`^[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$`)

// Parse reads a duration as the config writes it: 0 to Max.
func Parse(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	negative := strings.HasPrefix(s, "-")
	tooLong := func() (Duration, error) {
		if negative {
			return 0, fmt.Errorf("negative duration %q", s)
		}
		return 0, fmt.Errorf("duration %q is too long (at most %dd)", s, maxDays)
	}
	var v time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			return tooLong()
		}
		if err != nil {
			return 0, invalid(s)
		}
		if n > maxDays || n < -maxDays {
			return tooLong()
		}
		v = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if v, err = time.ParseDuration(s); err != nil {
			if goDuration.MatchString(s) {
				return tooLong()
			}
			return 0, invalid(s)
		}
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	if v > time.Duration(Max) {
		return tooLong()
	}
	return Duration(v), nil
}

func invalid(s string) error {
	return fmt.Errorf("invalid duration %q (use e.g. 90s, 30m, 1h, 7d)", s)
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
