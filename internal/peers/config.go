// Package peers follows the DNSBL zones (RFC 5782) that other mxguard
// hosts publish and mirrors their bans into this host's ban Manager: a
// secondary DNS server's job (AXFR at start, IXFR after a NOTIFY, SOA
// polling as the fallback) whose "zone file" is the ban index.
package peers

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/tsig"
)

// Defaults of a peer's keys.
const (
	DefaultMaxBan     = 24 * time.Hour
	DefaultMaxEntries = 1_000_000
	// minRefresh keeps a zone's SOA refresh (or a configured one) from
	// turning the follower into a busy loop against the primary.
	minRefresh = 10 * time.Second
	// defaultRefresh is used until a SOA told the zone's own.
	defaultRefresh = time.Hour
)

// Config is one entry of the `peers:` list.
type Config struct {
	// Name identifies the peer: bans mirrored from it have the detector
	// peer:NAME.
	Name string `yaml:"name" json:"name"`
	// Zone is the peer's DNSBL zone (bl.mx2.example.org).
	Zone string `yaml:"zone" json:"zone"`
	// Primary is host:port of the DNS server the zone is transferred from
	// (the peer's own or a secondary).
	Primary string `yaml:"primary" json:"primary"`
	// TSIG signs the transfer requests and checks the answers (and
	// NOTIFYs that carry a signature).
	TSIG tsig.Key `yaml:"tsig" json:"tsig"`
	// MaxBan caps a mirrored ban's lifetime from the last transfer that
	// listed it. Default 24h.
	MaxBan duration.Duration `yaml:"max_ban" json:"max_ban"`
	// NotifyListen is where NOTIFYs for this zone are accepted
	// (host:port, UDP and TCP), only from the primary's addresses; empty:
	// none (SOA polling only). Peers may share one address.
	NotifyListen string `yaml:"notify_listen" json:"notify_listen,omitempty"`
	// Refresh is how often the SOA is polled; 0: the zone's SOA refresh.
	Refresh duration.Duration `yaml:"refresh" json:"refresh,omitempty"`
	// MaxEntries bounds the entries kept of this peer; a transfer beyond
	// it is refused (the mirrored bans stay as they were). Default 1M.
	MaxEntries int `yaml:"max_entries" json:"max_entries"`
}

// WithDefaults fills the keys left out.
func (c Config) WithDefaults() Config {
	if c.MaxBan == 0 {
		c.MaxBan = duration.Duration(DefaultMaxBan)
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.TSIG.Algorithm == "" && c.TSIG.Name != "" {
		c.TSIG.Algorithm = tsig.Algorithm
	}
	return c
}

// ZoneFQDN is the zone in canonical form (lower case, trailing dot).
func (c Config) ZoneFQDN() string { return dns.CanonicalName(c.Zone) }

// KeyFQDN is the TSIG key name in canonical form ("" without TSIG).
func (c Config) KeyFQDN() string {
	return c.TSIG.FQDN()
}

var peerName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateAll checks the whole list (after WithDefaults); every error
// names its key as peers[i].KEY.
func ValidateAll(list []Config) error {
	var errs []error
	names := map[string]int{}
	zones := map[string]int{}
	for i, c := range list {
		key := fmt.Sprintf("peers[%d]", i)
		errs = append(errs, c.validate(key)...)
		if j, ok := names[c.Name]; ok && c.Name != "" {
			errs = append(errs, fmt.Errorf("%s.name: %q is also peers[%d].name: each peer needs its own name", key, c.Name, j))
		}
		names[c.Name] = i
		if z := c.ZoneFQDN(); c.Zone != "" {
			if j, ok := zones[z]; ok {
				errs = append(errs, fmt.Errorf("%s.zone: %q is also peers[%d].zone", key, c.Zone, j))
			}
			zones[z] = i
		}
	}
	return errors.Join(errs...)
}

func (c Config) validate(key string) []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(key+"."+format, a...)) }
	if !peerName.MatchString(c.Name) {
		add("name: %q: want 1-63 lower-case letters, digits, '.', '_' or '-' (it becomes the detector peer:NAME)", c.Name)
	}
	if c.Zone == "" {
		add("zone: missing: the peer's DNSBL zone, e.g. bl.mx2.example.org")
	} else if _, ok := dns.IsDomainName(c.Zone); !ok || c.ZoneFQDN() == "." {
		add("zone: %q is not a domain name", c.Zone)
	}
	if err := checkHostPort(c.Primary, false); err != nil {
		add("primary: %q: %v", c.Primary, err)
	}
	if c.NotifyListen != "" {
		if err := checkHostPort(c.NotifyListen, true); err != nil {
			add("notify_listen: %q: %v", c.NotifyListen, err)
		}
	}
	if c.TSIG.IsZero() {
		add("tsig: missing: a zone of bans is transferred only with a TSIG key (name, algorithm hmac-sha256, secret)")
	} else if err := c.TSIG.Validate(); err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			add("tsig.%s", e)
		}
	}
	if c.MaxBan <= 0 {
		add("max_ban: must be positive, got %s", c.MaxBan)
	}
	if c.Refresh != 0 && c.Refresh.D() < minRefresh {
		add("refresh: %s is too often: at least %s (leave it out for the zone's SOA refresh)", c.Refresh, minRefresh)
	}
	if c.Refresh != 0 && c.MaxBan > 0 && c.Refresh.D() >= c.MaxBan.D()/2 {
		add("refresh: %s is not below half of max_ban (%s): the mirrored bans would lapse between polls", c.Refresh, c.MaxBan)
	}
	if c.MaxEntries < 1 {
		add("max_entries: must be at least 1, got %d", c.MaxEntries)
	}
	return errs
}

func checkHostPort(s string, listen bool) error {
	if s == "" {
		return errors.New("missing: want host:port")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port, e.g. 192.0.2.53:53")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && !listen) {
		return errors.New("bad port: want 1 to 65535")
	}
	if host == "" && !listen {
		return errors.New("missing host")
	}
	return nil
}
