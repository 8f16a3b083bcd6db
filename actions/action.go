// Package actions carries out bans: the bbolt block list (the source of
// truth), iptables/ip6tables, ipset and Postfix access maps.
package actions

import (
	"context"
	"net/netip"
	"time"
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
