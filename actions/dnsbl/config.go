package dnsbl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/tsig"
)

// Duration is the config's duration ("1h", "30s"; see internal/duration).
type Duration = duration.Duration

// Config is the `publish.dnsbl:` section.
type Config struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Zone is the DNSBL's zone, e.g. fleet.dnsbl.example.
	Zone string `yaml:"zone" json:"zone"`
	// Listen is the host:port served on UDP and TCP.
	Listen string `yaml:"listen" json:"listen"`
	// TTL of the listings (and of SOA and NS).
	TTL Duration `yaml:"ttl" json:"ttl"`
	SOA SOA      `yaml:"soa" json:"soa"`
	// Codes maps a detector name to its A record (127.0.0.x); the others
	// answer DefaultCode.
	Codes map[string]string `yaml:"codes" json:"codes"`
	// Detectors are the detectors whose bans are published; empty = all.
	Detectors []string `yaml:"detectors" json:"detectors"`
	// Secondaries are NOTIFY targets ("host" = port 53, or "host:port");
	// their addresses are the only ones allowed to transfer the zone.
	Secondaries []string `yaml:"secondaries" json:"secondaries"`
	TSIG        tsig.Key `yaml:"tsig" json:"tsig"`
	// RbldnsdFile, when set, is rewritten (atomically) with the same
	// listings in rbldnsd's combined format after each change.
	RbldnsdFile string `yaml:"rbldnsd_file" json:"rbldnsd_file"`
	// NotifyDelay collects changes this long before one NOTIFY and one
	// rbldnsd rewrite.
	NotifyDelay Duration  `yaml:"notify_delay" json:"notify_delay"`
	RateLimit   RateLimit `yaml:"rate_limit" json:"rate_limit"`
	// Journal bounds the changes kept for IXFR (resource records added
	// and deleted); an older serial gets a full AXFR.
	Journal int `yaml:"journal" json:"journal"`
}

// SOA holds the fields of the zone's SOA record (the serial is ours).
type SOA struct {
	MName   string   `yaml:"mname" json:"mname"`
	RName   string   `yaml:"rname" json:"rname"`
	Refresh Duration `yaml:"refresh" json:"refresh"`
	Retry   Duration `yaml:"retry" json:"retry"`
	Expire  Duration `yaml:"expire" json:"expire"`
	Minimum Duration `yaml:"minimum" json:"minimum"`
}

// RateLimit bounds the responses per client address (a /32, or the /56
// of an IPv6 address) with a token bucket; QPS 0 switches it off.
// Secondaries are not limited.
type RateLimit struct {
	QPS     float64 `yaml:"qps" json:"qps"`
	Burst   int     `yaml:"burst" json:"burst"`
	Clients int     `yaml:"clients" json:"clients"` // buckets kept at most
}

// DefaultCode is the A record of a listing whose detector has no code.
const DefaultCode = "127.0.0.2"

// DefaultConfig returns the defaults (disabled).
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:5353",
		TTL:    Duration(5 * time.Minute),
		SOA: SOA{Refresh: Duration(time.Hour), Retry: Duration(10 * time.Minute),
			Expire: Duration(7 * 24 * time.Hour), Minimum: Duration(time.Minute)},
		Codes: map[string]string{
			"dictionary": "127.0.0.2", "error_burst": "127.0.0.3", "pipelining": "127.0.0.3",
			"pregreet": "127.0.0.3", "bad_helo": "127.0.0.3", "relay_probe": "127.0.0.3",
			"sasl_bruteforce": "127.0.0.4", "manual": "127.0.0.10",
		},
		TSIG:        tsig.Key{Algorithm: tsig.Algorithm},
		NotifyDelay: Duration(200 * time.Millisecond),
		RateLimit:   RateLimit{QPS: 200, Burst: 400, Clients: 10000},
		Journal:     200000,
	}
}

// Validate reports every problem, each starting with its key (relative to
// the section: "zone: ...").
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Zone == "" {
		add("zone: required, e.g. dnsbl.example.org")
	} else if _, ok := dns.IsDomainName(c.Zone); !ok || c.Zone == "." {
		add("zone: %q is not a domain name", c.Zone)
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen: %q: want host:port, e.g. 0.0.0.0:53", c.Listen)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		add("listen: bad port in %q: want 0 to 65535", c.Listen)
	}
	if c.TTL <= 0 || time.Duration(c.TTL) > 24*time.Hour {
		add("ttl: %s: want more than 0 and at most 24h", c.TTL)
	}
	for _, f := range []struct {
		key string
		v   Duration
	}{{"soa.refresh", c.SOA.Refresh}, {"soa.retry", c.SOA.Retry}, {"soa.expire", c.SOA.Expire}, {"soa.minimum", c.SOA.Minimum}} {
		if f.v < Duration(time.Second) || time.Duration(f.v).Seconds() > float64(1<<31-1) {
			add("%s: %s: want at least 1s", f.key, f.v)
		}
	}
	for _, f := range []struct{ key, v string }{{"soa.mname", c.SOA.MName}, {"soa.rname", c.SOA.RName}} {
		if f.v == "" {
			continue // derived from the zone
		}
		if _, ok := dns.IsDomainName(f.v); !ok {
			add("%s: %q is not a domain name", f.key, f.v)
		}
	}
	names := make([]string, 0, len(c.Codes))
	for k := range c.Codes {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if _, err := parseCode(c.Codes[k]); err != nil {
			add("codes.%s: %v", k, err)
		}
	}
	for i, d := range c.Detectors {
		if strings.TrimSpace(d) == "" {
			add("detectors[%d]: empty name", i)
		} else if strings.HasPrefix(d, ban.PeerDetectorPrefix) {
			add("detectors[%d]: %q: bans mirrored from peers are never published", i, d)
		}
	}
	for i, s := range c.Secondaries {
		if _, err := parseSecondary(s); err != nil {
			add("secondaries[%d]: %v", i, err)
		}
	}
	if len(c.Secondaries) > 0 || !c.TSIG.IsZero() {
		// transfers are only ever signed
		if err := c.TSIG.Validate(); err != nil {
			for _, e := range strings.Split(err.Error(), "\n") {
				add("tsig.%s", e)
			}
		}
	}
	if c.NotifyDelay < 0 || time.Duration(c.NotifyDelay) > time.Minute {
		add("notify_delay: %s: want 0 to 1m", c.NotifyDelay)
	}
	if c.RateLimit.QPS < 0 {
		add("rate_limit.qps: %v: want 0 (off) or more", c.RateLimit.QPS)
	}
	if c.RateLimit.QPS > 0 && c.RateLimit.Burst < 1 {
		add("rate_limit.burst: %d: want at least 1", c.RateLimit.Burst)
	}
	if c.RateLimit.QPS > 0 && (c.RateLimit.Clients < 1 || c.RateLimit.Clients > 10_000_000) {
		add("rate_limit.clients: %d: want 1 to 10000000", c.RateLimit.Clients)
	}
	if c.Journal < 0 {
		add("journal: %d: want 0 (no IXFR) or more", c.Journal)
	}
	return errors.Join(errs...)
}

// Warnings names the detectors in codes and detectors that mxguard does
// not know (a typo publishes nothing, or the default code), each with
// its key relative to the section.
func (c Config) Warnings() []string {
	if !c.Enabled {
		return nil
	}
	known := map[string]bool{ban.DetectorManual: true, detectors.PrefixEscalation: true}
	for _, n := range detectors.Names() {
		known[n] = true
	}
	list := strings.Join(append(detectors.Names(), detectors.PrefixEscalation, ban.DetectorManual), ", ")
	var ws []string
	names := make([]string, 0, len(c.Codes))
	for k := range c.Codes {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !known[k] {
			ws = append(ws, fmt.Sprintf("codes.%s: no detector of that name (known: %s)", k, list))
		}
	}
	for i, d := range c.Detectors {
		if !known[d] && !strings.HasPrefix(d, ban.PeerDetectorPrefix) {
			ws = append(ws, fmt.Sprintf("detectors[%d]: %q: no detector of that name (known: %s)", i, d, list))
		}
	}
	return ws
}

// parseCode parses a listing's A record: an address in 127.0.0.0/8.
func parseCode(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || a.As4()[0] != 127 {
		return netip.Addr{}, fmt.Errorf("%q: want an address in 127.0.0.0/8, e.g. 127.0.0.2", s)
	}
	if a.As4() == [4]byte{127, 0, 0, 1} {
		return netip.Addr{}, fmt.Errorf("%q: 127.0.0.1 means \"not listed\" to many clients (RFC 5782); use 127.0.0.2 or above", s)
	}
	return a, nil
}

// secondary is one configured secondary.
type secondary struct {
	addr   netip.Addr
	notify string // host:port
}

func parseSecondary(s string) (secondary, error) {
	host, port := s, "53"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return secondary{}, fmt.Errorf("%q: want an IP address or address:port", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return secondary{}, fmt.Errorf("%q: bad port", s)
	}
	return secondary{addr: a.Unmap(), notify: net.JoinHostPort(a.Unmap().String(), port)}, nil
}
