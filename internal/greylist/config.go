package greylist

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/duration"
)

// Config configures greylisting (like postgrey). The triplet is (client
// network: /24 for IPv4, /64 for IPv6; sender with VERP numbers and
// +extensions collapsed; recipient), addresses compared in lower case.
// The first attempt of a triplet is deferred with "Greylisted, see URL
// (try again in N s)", which event.Classify classes as greylisting: not
// evidence of abuse. If the database fails, recipients pass.
type Config struct {
	Enabled bool `yaml:"enabled"` // Default: false.
	// DB is the greylist's own bbolt file. Empty: `mxguard daemon` uses
	// state_dir/greylist.db.
	DB string `yaml:"db"`
	// Delay: a retry passes only this long after the first attempt. Default: 5m.
	Delay duration.Duration `yaml:"delay"`
	// RetryWindow: a retry later than this after the first attempt starts
	// over. Default: 48h.
	RetryWindow duration.Duration `yaml:"retry_window"`
	// MaxAge: passed triplets and auto-allowlisted clients unused this long
	// are forgotten (and deleted by the hourly sweep). Default: 35d (840h).
	MaxAge duration.Duration `yaml:"max_age"`
	// AutoAllowlist: a client network whose retries passed for this many
	// distinct triplets skips greylisting (until unused for max_age).
	// 0 = off. Default: 5.
	AutoAllowlist int `yaml:"auto_allowlist"`
	// MaxEntries caps each bucket (triplets, clients); beyond it the sweep
	// evicts down to 90%: pending triplets first, from the networks with the
	// most pending ones, then passed triplets least recently used first
	// (clients: least recently used). Each network also keeps at most 10000
	// pending triplets (its oldest make room). Keys are 32 bytes (network +
	// hash of sender and recipient), so a flood cannot grow them.
	// 0 = no cap. Default: 1000000.
	MaxEntries int `yaml:"max_entries"`
	// InfoURL is named in the reply. Default: https://en.wikipedia.org/wiki/Greylisting.
	InfoURL string `yaml:"info_url"`
}

// DefaultConfig returns the defaults (greylisting off).
func DefaultConfig() Config {
	return Config{
		Delay: duration.Duration(5 * time.Minute), RetryWindow: duration.Duration(48 * time.Hour),
		MaxAge: duration.Duration(35 * 24 * time.Hour), AutoAllowlist: 5, MaxEntries: 1000000,
		InfoURL: "https://en.wikipedia.org/wiki/Greylisting",
	}
}

// Validate reports every problem of an enabled config, each naming its
// key under the section ("delay", "retry_window").
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Delay < 0 {
		bad("delay", "must be ≥ 0")
	}
	if c.RetryWindow <= c.Delay {
		bad("retry_window", "must be > delay (%s), got %s", c.Delay, c.RetryWindow)
	}
	if c.MaxAge < c.RetryWindow {
		bad("max_age", "must be ≥ retry_window (%s), got %s", c.RetryWindow, c.MaxAge)
	}
	if c.AutoAllowlist < 0 {
		bad("auto_allowlist", "must be ≥ 0, got %d", c.AutoAllowlist)
	}
	if c.MaxEntries < 0 {
		bad("max_entries", "must be ≥ 0, got %d", c.MaxEntries)
	}
	if strings.ContainsAny(c.InfoURL, "\r\n") {
		bad("info_url", "must be one line")
	}
	return errors.Join(errs...)
}

// SameStore reports the first key in which a and b, which share one
// database file, disagree about how that store behaves ("" if none).
func SameStore(a, b Config) string {
	switch {
	case a.Delay != b.Delay:
		return "delay"
	case a.RetryWindow != b.RetryWindow:
		return "retry_window"
	case a.MaxAge != b.MaxAge:
		return "max_age"
	case a.AutoAllowlist != b.AutoAllowlist:
		return "auto_allowlist"
	case a.MaxEntries != b.MaxEntries:
		return "max_entries"
	}
	return ""
}

// NormalizeSender is the sender as the triplet sees it (postgrey's
// sender substitutions): the local part loses its +extension, and each
// run of digits standing alone as a word becomes "#", so that VERP and
// bounce-tracking senders (list-1234-5678@, bounce+abc@) make one triplet,
// not one per message. Case is folded by the key.
func NormalizeSender(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	user, domain := addr[:at], addr[at:]
	if i := strings.IndexByte(user, '+'); i >= 0 {
		user = user[:i]
	}
	if !strings.ContainsAny(user, "0123456789") {
		return user + domain
	}
	var b strings.Builder
	b.Grow(len(addr))
	for i := 0; i < len(user); {
		if isDigit(user[i]) && (i == 0 || !isWord(user[i-1])) {
			j := i
			for j < len(user) && isDigit(user[j]) {
				j++
			}
			if j == len(user) || !isWord(user[j]) {
				b.WriteByte('#')
				i = j
				continue
			}
			b.WriteString(user[i:j])
			i = j
			continue
		}
		b.WriteByte(user[i])
		i++
	}
	b.WriteString(domain)
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isWord is Perl's \w for ASCII: what \b separates digits from.
func isWord(c byte) bool {
	return isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}
