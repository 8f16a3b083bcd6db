// Package ban decides bans: one Manager turns detector decisions and manual
// bans into bans with escalating durations, refuses allowlisted or too broad
// prefixes, records every ban in a store first and then carries it out
// through the actions (firewall backends, Postfix access map).
package ban

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/actions/store"
)

// Ban is one active (or past) ban.
type Ban struct {
	Prefix   netip.Prefix `json:"ip"`
	Detector string       `json:"detector"`
	Reason   string       `json:"reason"`
	Evidence int          `json:"evidence"`
	Since    time.Time    `json:"since"`
	Until    time.Time    `json:"until"`
	Offence  int          `json:"offence"`
	DryRun   bool         `json:"dry_run,omitempty"`
}

// Active reports whether the ban is in force at now.
func (b Ban) Active(now time.Time) bool { return now.Before(b.Until) }

// Action is a place a ban is carried out. Every method is idempotent:
// applying a ban twice or revoking one that is not there is not an error.
// Addresses reaching an Action have been validated by the Manager.
type Action interface {
	Name() string
	Apply(ctx context.Context, b Ban) error
	Revoke(ctx context.Context, p netip.Prefix) error
	// Sync makes the backend hold exactly the given active bans (start-up
	// reconcile: add what is missing, remove what is not banned any more).
	Sync(ctx context.Context, active []Ban) error
	Close() error
}

// FromRecord is the ban a stored record stands for.
func FromRecord(r store.Record) Ban {
	return Ban{Prefix: r.Prefix, Detector: r.Detector, Reason: r.Reason, Evidence: r.Evidence,
		Since: r.Since, Until: r.Until, Offence: r.Offence}
}

// ErrInvalidPrefix is wrapped by every backend when Apply or Revoke gets a
// prefix that must never reach a firewall or map file.
var ErrInvalidPrefix = errors.New("invalid prefix")

// CheckPrefix re-validates the form of a prefix before it reaches an
// external program: it must be valid, canonical (no host bits), not an
// IPv4-mapped IPv6 address, not a zone, and not /0. Breadth and allowlists
// are the Manager's job.
func CheckPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%w %q", ErrInvalidPrefix, p.String())
	case p.Addr().Is4In6():
		return fmt.Errorf("%w %s: IPv4-mapped IPv6 address, unmap it first", ErrInvalidPrefix, p)
	case p.Addr().Zone() != "":
		return fmt.Errorf("%w %s: has a zone", ErrInvalidPrefix, p)
	case p.Masked() != p:
		return fmt.Errorf("%w %s: host bits set (want %s)", ErrInvalidPrefix, p, p.Masked())
	case p.Bits() == 0:
		return fmt.Errorf("%w %s: refusing to ban everything", ErrInvalidPrefix, p)
	}
	return nil
}
