package smtpguard

import "github.com/mxguard/mxguard/internal/smtpcheck"

// The DNS, DNSBL and HELO checks live in internal/smtpcheck, which the
// policy service shares; these names keep the guard's code short.

// Resolver answers the DNS questions of the guard (see smtpcheck.Resolver).
type Resolver = smtpcheck.Resolver

// ErrNotFound is returned by a Resolver for NXDOMAIN or an empty answer.
var ErrNotFound = smtpcheck.ErrNotFound

type dnsblSite = smtpcheck.Site

var (
	parseSite           = smtpcheck.ParseSite
	validDomain         = smtpcheck.ValidDomain
	fcrdns              = smtpcheck.FCrDNS
	dnsblScore          = smtpcheck.DNSBLScore
	newDNSResolver      = smtpcheck.NewResolver
	defaultResolverAddr = smtpcheck.DefaultResolverAddr
	reverseName         = smtpcheck.ReverseName
)
