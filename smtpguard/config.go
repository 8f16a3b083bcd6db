package smtpguard

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/prefixes"
)

// Duration is the config's duration ("1s", "5m", "35d"; see internal/duration).
type Duration = duration.Duration

// Action is what a check does when it fails.
type Action string

const (
	Reject Action = "reject" // answer with the error and emit an abuse event
	Warn   Action = "warn"   // let it pass; emit the event with Abuse=false
	Off    Action = "off"    // do not check
)

// Handoff says how the upstream MTA learns the real client.
const (
	HandoffXCLIENT = "xclient" // Postfix smtpd_authorized_xclient_hosts
	HandoffProxy   = "proxy"   // PROXY protocol v1 (smtpd_upstream_proxy_protocol = haproxy)
)

// Checks configures the staged HELO/MAIL/RCPT/DATA checks.
type Checks struct {
	// HeloRequired: MAIL before HELO/EHLO. go-smtp always refuses it
	// (502 5.5.1); this only decides whether that is evidence. Default: reject.
	HeloRequired Action `yaml:"helo_required"`
	// HeloFQDN: bad HELO syntax (helo_invalid, 501 5.5.2), a name without
	// a dot or a bare IP address that is not an [address literal]
	// (helo_non_fqdn, 504 5.5.2). Default: reject.
	HeloFQDN Action `yaml:"helo_fqdn"`
	// HeloDeny: HELO names in HeloDenyNames (554 5.7.1, helo_access). Default: reject.
	HeloDeny Action `yaml:"helo_deny"`
	// HeloDenyNames: names nobody may use in HELO, case-insensitive. The
	// guard's own hostname is always added. Default: [friend, localhost,
	// localhost.localdomain].
	HeloDenyNames []string `yaml:"helo_deny_names"`
	// SenderFQDN: MAIL FROM whose domain has no dot (504 5.5.2). Default: reject.
	SenderFQDN Action `yaml:"sender_fqdn"`
	// SenderDomainDNS: MAIL FROM domain without MX/A/AAAA (550 5.1.8);
	// a DNS failure answers 451 4.1.8. Default: off.
	SenderDomainDNS Action `yaml:"sender_domain_dns"`
	// RecipientFQDN: RCPT TO whose domain has no dot (504 5.5.2). Default: reject.
	RecipientFQDN Action `yaml:"recipient_fqdn"`
	// Relay: RCPT TO domain not in guard.domains (554 5.7.1 Relay access
	// denied). Ignored while domains is empty (the upstream decides).
	// Default: reject.
	Relay Action `yaml:"relay"`
	// UnknownRecipient: RCPT TO not in guard.recipients (550 5.1.1).
	// Ignored while recipients is empty. The upstream is always asked
	// live as well (each RCPT is forwarded), so its "User unknown"
	// answers reach the client and the detectors either way. Default: reject.
	UnknownRecipient Action `yaml:"unknown_recipient"`
	// MultiRecipientBounce: MAIL FROM:<> with more than one recipient
	// (550 5.5.3 at DATA). Default: reject.
	MultiRecipientBounce Action `yaml:"multi_recipient_bounce"`
	// FCrDNS: forward-confirmed reverse DNS of the client (Postfix
	// reject_unknown_client_hostname). The client's PTR names (the first 5)
	// are looked up during the greet pause; one whose A/AAAA records hold
	// the client address confirms it. Without one, each RCPT gets
	// "450 4.7.25 Client host rejected: cannot find your hostname, [ADDR]"
	// (450, not 5xx: DNS is not reliable enough). A DNS failure (timeout,
	// SERVFAIL) lets the client through. Allowlisted clients skip the
	// check. When on (warn or reject), a confirmed name is passed to the
	// upstream as XCLIENT NAME, so Postfix logs it. Default: off.
	FCrDNS Action `yaml:"fcrdns"`
	// DisableVRFY answers VRFY with 502 5.5.1 (Postfix disable_vrfy_command). Default: true.
	DisableVRFY bool `yaml:"disable_vrfy"`
}

// Limits bounds what one client and all clients together may do.
// Zero means unlimited for counts and off for durations unless said otherwise.
type Limits struct {
	MaxConnections          int      `yaml:"max_connections"`            // all clients at once (421 4.7.0). Default: 2000.
	MaxConnectionsPerClient int      `yaml:"max_connections_per_client"` // one address at once (421 4.7.0). Default: 20.
	ConnectionRate          int      `yaml:"connection_rate"`            // new connections per address per connection_rate_window. Default: 60.
	ConnectionRateWindow    Duration `yaml:"connection_rate_window"`     // Default: 1m.
	SoftErrorLimit          int      `yaml:"soft_error_limit"`           // errors before replies are delayed. Default: 3.
	HardErrorLimit          int      `yaml:"hard_error_limit"`           // errors before 421 and close. Default: 6.
	ErrorSleep              Duration `yaml:"error_sleep"`                // delay per error beyond the soft limit (grows). Default: 1s.
	MaxLineLength           int      `yaml:"max_line_length"`            // command line bytes incl. CRLF. Default: 2048.
	MaxCommands             int      `yaml:"max_commands"`               // commands per session. Default: 1000.
	CommandTimeout          Duration `yaml:"command_timeout"`            // to start the next command (idle between commands). Default: 5m.
	LineTimeout             Duration `yaml:"line_timeout"`               // to finish a command line once its first byte came (slowloris bound). Default: 10s.
	DataTimeout             Duration `yaml:"data_timeout"`               // to send one whole message after 354. Default: 10m.
	IdleTimeout             Duration `yaml:"idle_timeout"`               // between two reads inside DATA. Default: 5m.
	WriteTimeout            Duration `yaml:"write_timeout"`              // Default: 5m.
	MaxMessageBytes         int64    `yaml:"max_message_bytes"`          // Default: 10240000 (Postfix message_size_limit).
	MaxRecipients           int      `yaml:"max_recipients"`             // per message. Default: 1000.
	UpstreamTimeout         Duration `yaml:"upstream_timeout"`           // connect and each upstream reply. Default: 60s.
	UpstreamDataTimeout     Duration `yaml:"upstream_data_timeout"`      // final reply after the message. Default: 10m.
	// StressThreshold: the guard is under stress while more connections
	// than this share of max_connections are open (like Postfix's stress
	// feature), until they fall to 90% of that level. Under stress
	// command_timeout and idle_timeout drop to stress_timeout, and
	// greet_pause and error_sleep to a quarter. 0 = never; also never
	// without max_connections. Default: 0.8.
	StressThreshold float64  `yaml:"stress_threshold"`
	StressTimeout   Duration `yaml:"stress_timeout"` // command_timeout and idle_timeout under stress. Default: 10s.
}

// DNSBLConfig configures the connect-time DNS blocklist lookups.
type DNSBLConfig struct {
	// Sites are zones with an optional weight: "zen.spamhaus.org*3".
	// Several zones are asked in parallel; the weights of those that list
	// the client are added. Empty = off.
	Sites []string `yaml:"sites"`
	// Threshold is the score at which a client is refused (554 5.7.1). Default: 3.
	Threshold int `yaml:"threshold"`
	// Timeout for all lookups of one client together; on timeout the
	// client is let in. Default: 2s.
	Timeout Duration `yaml:"timeout"`
	// CacheTTL caps how long answers are cached. Default: 5m.
	CacheTTL Duration `yaml:"cache_ttl"`
}

// GreylistConfig configures greylisting at RCPT (like postgrey; see
// greylist.Config, the one implementation the policy service shares).
// The guard answers a greylisted recipient with "450 4.2.0 <rcpt>:
// Recipient address rejected: Greylisted, see URL (try again in N s)",
// an event with reason greylisted that is not evidence of abuse and not
// counted toward the error limits. Allowlisted clients (guard.allowlist)
// skip it; so do clients that failed a local check (those are refused
// first).
type GreylistConfig = greylist.Config

// TLSConfig enables STARTTLS when both files are set.
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Config is the `guard:` section of the mxguard config.
type Config struct {
	// Enabled runs the guard inside `mxguard daemon`; `mxguard guard`
	// runs it whatever this says. Default: false.
	Enabled  bool   `yaml:"enabled"`
	Listen   string `yaml:"listen"`   // Default: ":25".
	Upstream string `yaml:"upstream"` // Default: "127.0.0.1:10025".
	Handoff  string `yaml:"handoff"`  // xclient | proxy. Default: xclient.
	Hostname string `yaml:"hostname"` // banner and HELO to upstream. Default: os.Hostname().
	// GreetPause holds the banner back; a client that talks first is a
	// pregreet bot (554 5.5.1). Allowlisted clients get no pause. Default: 1s.
	GreetPause Duration `yaml:"greet_pause"`
	// GreetTeaser sends "220-" before the pause (like postscreen_greet_banner),
	// which makes bots that do not wait for the last greeting line talk early.
	// Default: true.
	GreetTeaser bool `yaml:"greet_teaser"`
	// Allowlist: CIDRs or addresses that skip the connection stage (block
	// list, limits, DNSBL, greet pause). Loopback is NOT implied. Default: none.
	Allowlist []string `yaml:"allowlist"`
	// Domains the guard accepts mail for (relay check). Empty = the upstream decides.
	Domains []string `yaml:"domains"`
	// Recipients known to exist (addresses, or "@domain" for a catch-all).
	// Empty = the upstream decides.
	Recipients []string `yaml:"recipients"`
	// Resolver is the DNS server (host:port) for DNSBL, sender domain and
	// FCrDNS checks. Default: the first nameserver of /etc/resolv.conf.
	Resolver string         `yaml:"resolver"`
	Checks   Checks         `yaml:"checks"`
	Limits   Limits         `yaml:"limits"`
	DNSBL    DNSBLConfig    `yaml:"dnsbl"`
	Greylist GreylistConfig `yaml:"greylist"`
	TLS      TLSConfig      `yaml:"tls"`
}

// DefaultConfig returns the defaults. Decode YAML into it so that keys
// left out keep their default.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Listen:      ":25",
		Upstream:    "127.0.0.1:10025",
		Handoff:     HandoffXCLIENT,
		Hostname:    host,
		GreetPause:  Duration(time.Second),
		GreetTeaser: true,
		Checks: Checks{
			HeloRequired: Reject, HeloFQDN: Reject, HeloDeny: Reject,
			HeloDenyNames: []string{"friend", "localhost", "localhost.localdomain"},
			SenderFQDN:    Reject, SenderDomainDNS: Off, RecipientFQDN: Reject,
			Relay: Reject, UnknownRecipient: Reject, MultiRecipientBounce: Reject,
			FCrDNS: Off, DisableVRFY: true,
		},
		Limits: Limits{
			MaxConnections: 2000, MaxConnectionsPerClient: 20,
			ConnectionRate: 60, ConnectionRateWindow: Duration(time.Minute),
			SoftErrorLimit: 3, HardErrorLimit: 6, ErrorSleep: Duration(time.Second),
			MaxLineLength: 2048, MaxCommands: 1000,
			CommandTimeout: Duration(5 * time.Minute), LineTimeout: Duration(10 * time.Second),
			DataTimeout: Duration(10 * time.Minute),
			IdleTimeout: Duration(5 * time.Minute), WriteTimeout: Duration(5 * time.Minute),
			MaxMessageBytes: 10240000, MaxRecipients: 1000,
			UpstreamTimeout: Duration(time.Minute), UpstreamDataTimeout: Duration(10 * time.Minute),
			StressThreshold: 0.8, StressTimeout: Duration(10 * time.Second),
		},
		DNSBL:    DNSBLConfig{Threshold: 3, Timeout: Duration(2 * time.Second), CacheTTL: Duration(5 * time.Minute)},
		Greylist: greylist.DefaultConfig(),
	}
}

// Validate reports every problem, each naming its key under guard.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("guard.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	hostport := func(key, v string, needHost bool) {
		h, p, err := net.SplitHostPort(v)
		if err != nil {
			bad(key, "want host:port, got %q", v)
			return
		}
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			bad(key, "bad port in %q", v)
		}
		if needHost && h == "" {
			bad(key, "missing host in %q", v)
		}
	}
	hostport("listen", c.Listen, false)
	hostport("upstream", c.Upstream, true)
	if c.Handoff != HandoffXCLIENT && c.Handoff != HandoffProxy {
		bad("handoff", "want xclient or proxy, got %q", c.Handoff)
	}
	if c.Hostname == "" || !validDomain(c.Hostname) {
		bad("hostname", "want a host name, got %q", c.Hostname)
	}
	if c.GreetPause < 0 || c.GreetPause.D() > time.Minute {
		bad("greet_pause", "want 0 to 1m, got %s", c.GreetPause)
	}
	if _, err := prefixes.ParseList(c.Allowlist); err != nil {
		bad("allowlist", "%v", err)
	}
	for _, d := range c.Domains {
		if !validDomain(d) {
			bad("domains", "bad domain %q", d)
		}
	}
	for _, r := range c.Recipients {
		if !strings.Contains(r, "@") {
			bad("recipients", "want user@domain or @domain, got %q", r)
		}
	}
	if c.Resolver != "" {
		hostport("resolver", c.Resolver, true)
	}
	ch := c.Checks
	for _, a := range []struct {
		key string
		v   Action
	}{
		{"helo_required", ch.HeloRequired}, {"helo_fqdn", ch.HeloFQDN}, {"helo_deny", ch.HeloDeny},
		{"sender_fqdn", ch.SenderFQDN}, {"sender_domain_dns", ch.SenderDomainDNS},
		{"recipient_fqdn", ch.RecipientFQDN}, {"relay", ch.Relay},
		{"unknown_recipient", ch.UnknownRecipient}, {"multi_recipient_bounce", ch.MultiRecipientBounce},
		{"fcrdns", ch.FCrDNS},
	} {
		if a.v != Reject && a.v != Warn && a.v != Off {
			bad("checks."+a.key, "want reject, warn or off, got %q", a.v)
		}
	}
	l := c.Limits
	for _, n := range []struct {
		key string
		v   int64
	}{
		{"max_connections", int64(l.MaxConnections)}, {"max_connections_per_client", int64(l.MaxConnectionsPerClient)},
		{"connection_rate", int64(l.ConnectionRate)}, {"soft_error_limit", int64(l.SoftErrorLimit)},
		{"hard_error_limit", int64(l.HardErrorLimit)}, {"max_commands", int64(l.MaxCommands)},
		{"max_message_bytes", l.MaxMessageBytes}, {"max_recipients", int64(l.MaxRecipients)},
	} {
		if n.v < 0 {
			bad("limits."+n.key, "must be ≥ 0, got %d", n.v)
		}
	}
	if l.ConnectionRate > 0 && l.ConnectionRateWindow <= 0 {
		bad("limits.connection_rate_window", "must be > 0 when connection_rate is set")
	}
	if l.MaxLineLength < 512 {
		bad("limits.max_line_length", "must be ≥ 512 (RFC 5321), got %d", l.MaxLineLength)
	}
	if l.HardErrorLimit > 0 && l.SoftErrorLimit > l.HardErrorLimit {
		bad("limits.soft_error_limit", "must be ≤ hard_error_limit (%d), got %d", l.HardErrorLimit, l.SoftErrorLimit)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"command_timeout", l.CommandTimeout}, {"line_timeout", l.LineTimeout},
		{"data_timeout", l.DataTimeout}, {"idle_timeout", l.IdleTimeout},
		{"write_timeout", l.WriteTimeout}, {"upstream_timeout", l.UpstreamTimeout},
		{"upstream_data_timeout", l.UpstreamDataTimeout},
	} {
		if d.v <= 0 {
			bad("limits."+d.key, "must be > 0, got %s", d.v)
		}
	}
	if !(l.StressThreshold >= 0 && l.StressThreshold <= 1) { // NaN too
		bad("limits.stress_threshold", "want 0 (off) to 1, got %v", l.StressThreshold)
	}
	if l.StressThreshold > 0 && l.StressTimeout <= 0 {
		bad("limits.stress_timeout", "must be > 0 when stress_threshold is set, got %s", l.StressTimeout)
	}
	if l.ErrorSleep < 0 {
		bad("limits.error_sleep", "must be ≥ 0")
	}
	for _, s := range c.DNSBL.Sites {
		if _, err := parseSite(s); err != nil {
			bad("dnsbl.sites", "%v", err)
		}
	}
	if len(c.DNSBL.Sites) > 0 && c.DNSBL.Threshold < 1 {
		bad("dnsbl.threshold", "must be ≥ 1, got %d", c.DNSBL.Threshold)
	}
	// every DNS lookup (DNSBL, FCrDNS, sender domains) is bounded by it
	usesDNS := len(c.DNSBL.Sites) > 0 || c.Checks.FCrDNS != Off || c.Checks.SenderDomainDNS != Off
	if usesDNS && c.DNSBL.Timeout <= 0 {
		bad("dnsbl.timeout", "must be > 0 (it bounds every DNS lookup of the guard)")
	}
	if err := c.Greylist.Validate(); err != nil {
		for _, e := range unjoinErrs(err) {
			errs = append(errs, fmt.Errorf("guard.greylist.%w", e))
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		bad("tls", "set both cert and key, or neither")
	}
	return errors.Join(errs...)
}

// unjoinErrs splits an errors.Join result into its errors.
func unjoinErrs(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
