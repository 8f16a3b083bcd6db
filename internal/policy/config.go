package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/prefixes"
	"github.com/mxguard/mxguard/internal/smtpcheck"
)

// MaxDNSTimeout caps dnsbl.timeout: a request waits for DNS at most this
// long, well under the timeout Postfix gives the policy service.
const MaxDNSTimeout = 5 * time.Second

// Duration is the config's duration ("1s", "5m", "35d").
type Duration = duration.Duration

// Action is what a check does when it finds something.
type Action string

const (
	Reject     Action = "reject"     // REJECT (5xx); for greylisting: DEFER (4xx at once)
	Defer      Action = "defer"      // DEFER_IF_PERMIT (4xx unless a later restriction rejects)
	Warn       Action = "warn"       // WARN: Postfix logs it and goes on
	Off        Action = "off"        // do not check
	Disconnect Action = "disconnect" // block list only: 421, Postfix drops the client
)

// Limits bound what one policy client (one smtpd process) may send.
type Limits struct {
	// MaxAttributeLength: a longer value is cut to this many bytes (as
	// postgrey does), never refused: a refusal would let a client skip
	// the checks with one long address. Default: 512.
	MaxAttributeLength int `yaml:"max_attribute_length"`
	// MaxAttributes per request; more closes the connection. Postfix
	// sends about 40. Default: 100.
	MaxAttributes int `yaml:"max_attributes"`
	// MaxRequestBytes per request, lines included; more closes the
	// connection. Default: 16384.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// IdleTimeout: a connection with no request for this long is closed
	// (Postfix's smtpd_policy_service_max_idle is 300s, so Postfix
	// normally closes first). Default: 10m.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// RequestTimeout: a request begun must end (empty line) within this.
	// Default: 10s.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxConnections open at once; more are closed at once (Postfix then
	// uses default_action). Default: 1000.
	MaxConnections int `yaml:"max_connections"`
}

// Checks chooses what each check does.
type Checks struct {
	// Blocklist: the client (or a prefix holding it) is banned in the ban
	// manager's index. reject | defer | disconnect | warn | off. Default: reject.
	Blocklist Action `yaml:"blocklist"`
	// HeloDeny: HELO names in helo_deny_names, our hostname, or the
	// server's own address (server_address). Default: reject.
	HeloDeny Action `yaml:"helo_deny"`
	// HeloDenyNames: case-insensitive. Default: [friend, localhost, localhost.localdomain].
	HeloDenyNames []string `yaml:"helo_deny_names"`
	// HeloFQDN: invalid HELO syntax or a name without a dot. Default: reject.
	HeloFQDN Action `yaml:"helo_fqdn"`
	// DNSBL: the client's summed weight in dnsbl.sites reaches
	// dnsbl.threshold. Default: reject (nothing happens while sites is empty).
	DNSBL Action `yaml:"dnsbl"`
	// FCrDNS: no forward-confirmed reverse name (Postfix's client_name is
	// "unknown" and our own lookup agrees; a DNS failure lets the client
	// through). Default: off.
	FCrDNS Action `yaml:"fcrdns"`
}

// DNSBLConfig is the DNSBL of the policy service (see smtpguard's).
type DNSBLConfig struct {
	Sites     []string `yaml:"sites"`     // "zone" or "zone*weight". Empty = off.
	Threshold int      `yaml:"threshold"` // Default: 3.
	// Timeout is one request's DNS budget: DNSBL and FCrDNS together
	// (≤ MaxDNSTimeout). Keep it under half of check_policy_service's
	// timeout (Postfix's default 100s, the README's 10s). Default: 2s.
	Timeout  Duration `yaml:"timeout"`
	CacheTTL Duration `yaml:"cache_ttl"` // Default: 5m.
}

// GreylistConfig is greylisting at RCPT: greylist.Config (one store, the
// guard's when both are on) plus how the policy service answers.
type GreylistConfig struct {
	greylist.Config `yaml:",inline"`
	// Action: defer (DEFER_IF_PERMIT, postgrey's answer), reject (DEFER:
	// 450 at once) or warn. Default: defer.
	Action Action `yaml:"action"`
	// Prepend adds "X-Greylist: delayed N seconds by mxguard at HOST;
	// DATE" to a message whose retry passed (postgrey's
	// --x-greylist-header). Default: true.
	Prepend bool `yaml:"prepend"`
}

// RateLimitConfig is policyd-rate-limit's model: per key (sasl_username,
// else sender, else client address) a list of [count, window] limits.
type RateLimitConfig struct {
	// Limits: e.g. [[100, 1h], [1000, 24h]]. Empty = off.
	Limits []RateLimit `yaml:"limits"`
	// CountAt: rcpt (each recipient counts at RCPT) or end_of_message
	// (recipient_count at END-OF-MESSAGE; needs check_policy_service in
	// smtpd_end_of_data_restrictions too). Both check at RCPT. Default: rcpt.
	CountAt string `yaml:"count_at"`
	// Action for a key over a limit: defer (DEFER_IF_PERMIT), reject or
	// warn. Default: defer.
	Action Action `yaml:"action"`
	// MaxKeys bounds the memory: beyond it the least recently used key is
	// forgotten. Default: 100000.
	MaxKeys int `yaml:"max_keys"`
}

// RateLimit is one [count, window] pair.
type RateLimit struct {
	Count  int
	Window Duration
}

// UnmarshalYAML reads [count, window].
func (r *RateLimit) UnmarshalYAML(n *yaml.Node) error {
	var pair []string
	if err := n.Decode(&pair); err != nil || len(pair) != 2 {
		return errors.New("want [count, window], e.g. [100, 1h]")
	}
	count, err := strconv.Atoi(pair[0])
	if err != nil {
		return fmt.Errorf("count %q: want a whole number", pair[0])
	}
	w, err := duration.Parse(pair[1])
	if err != nil {
		return err
	}
	r.Count, r.Window = count, w
	return nil
}

// MarshalYAML writes [count, window].
func (r RateLimit) MarshalYAML() (any, error) {
	return []any{r.Count, r.Window.String()}, nil
}

// Config is the `policy:` section: the Postfix policy delegation service.
type Config struct {
	// Enabled runs the service inside `mxguard daemon` (and `mxguard guard`). Default: false.
	Enabled bool `yaml:"enabled"`
	// Listen: "unix:PATH" or "inet:HOST:PORT". Default:
	// unix:/var/spool/postfix/private/mxguard (Postfix: unix:private/mxguard,
	// reachable by a chrooted smtpd). A unix socket tells who connects
	// (SO_PEERCRED), a TCP port does not: see PeerUsers, AllowPeers and
	// InetEvidence.
	Listen string `yaml:"listen"`
	// Owner, Group and Mode of a unix socket (a user or group name, or a
	// number): smtpd (user postfix) needs write access. Set before the
	// socket appears under its name. "" = unchanged (the daemon's user,
	// the umask). Ignored for inet. Default: postfix, postfix, 0660.
	Owner string `yaml:"owner"`
	Group string `yaml:"group"`
	Mode  string `yaml:"mode"`
	// PeerUsers may ask over a unix socket besides root, the daemon's own
	// user and Owner (names or uids); a connection from anyone else
	// (SO_PEERCRED) is closed at once. Default: [].
	PeerUsers []string `yaml:"peer_users"`
	// AllowPeers: the addresses (CIDRs) that may ask over inet; others
	// are closed at once. Default: [127.0.0.0/8, ::1/128].
	AllowPeers []string `yaml:"allow_peers"`
	// InetEvidence: findings of requests that came over inet count
	// against clients (ban evidence). Any local process can connect to a
	// TCP port and name any client_address, so by default they are only
	// answered and logged, never evidence; turn on only when no
	// untrusted user can reach the port. Default: false.
	InetEvidence bool `yaml:"inet_evidence"`
	// Hostname: our name (denied as HELO; in X-Greylist). Default: os.Hostname().
	Hostname string `yaml:"hostname"`
	// Allowlist: clients that skip every check but the rate limits.
	Allowlist []string `yaml:"allowlist"`
	// Resolver (host:port) for DNSBL and FCrDNS. Default: the guard's
	// resolver when the guard runs, else the first nameserver of resolv.conf.
	Resolver  string          `yaml:"resolver"`
	Limits    Limits          `yaml:"limits"`
	Checks    Checks          `yaml:"checks"`
	DNSBL     DNSBLConfig     `yaml:"dnsbl"`
	Greylist  GreylistConfig  `yaml:"greylist"`
	RateLimit RateLimitConfig `yaml:"rate_limit"`
}

// DefaultConfig returns the defaults. Decode YAML into it.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Listen:     "unix:/var/spool/postfix/private/mxguard",
		Owner:      "postfix",
		Group:      "postfix",
		Mode:       "0660",
		AllowPeers: []string{"127.0.0.0/8", "::1/128"},
		Hostname:   host,
		Limits: Limits{MaxAttributeLength: 512, MaxAttributes: 100, MaxRequestBytes: 16384,
			IdleTimeout: Duration(10 * time.Minute), RequestTimeout: Duration(10 * time.Second), MaxConnections: 1000},
		Checks: Checks{Blocklist: Reject, HeloDeny: Reject, HeloFQDN: Reject, DNSBL: Reject, FCrDNS: Off,
			HeloDenyNames: []string{"friend", "localhost", "localhost.localdomain"}},
		DNSBL:     DNSBLConfig{Threshold: 3, Timeout: Duration(2 * time.Second), CacheTTL: Duration(5 * time.Minute)},
		Greylist:  GreylistConfig{Config: greylist.DefaultConfig(), Action: Defer, Prepend: true},
		RateLimit: RateLimitConfig{CountAt: "rcpt", Action: Defer, MaxKeys: 100000},
	}
}

// ListenAddr splits Listen into a network ("unix", "tcp") and address.
func (c *Config) ListenAddr() (network, addr string, err error) {
	kind, rest, ok := strings.Cut(c.Listen, ":")
	switch {
	case ok && kind == "unix" && strings.HasPrefix(rest, "/"):
		return "unix", rest, nil
	case ok && kind == "inet":
		h, p, err := net.SplitHostPort(rest)
		if err != nil || h == "" {
			return "", "", fmt.Errorf("want inet:HOST:PORT, got %q", c.Listen)
		}
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return "", "", fmt.Errorf("bad port in %q", c.Listen)
		}
		return "tcp", rest, nil
	}
	return "", "", fmt.Errorf("want unix:/PATH or inet:HOST:PORT, got %q", c.Listen)
}

// SocketMode is Mode as a file mode (0 when unset).
func (c *Config) SocketMode() (os.FileMode, error) {
	if c.Mode == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(c.Mode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("want an octal mode such as 0660, got %q", c.Mode)
	}
	return os.FileMode(m), nil
}

func (c *Config) allowlist() ([]netip.Prefix, error) { return prefixes.ParseList(c.Allowlist) }

// Validate reports every problem, each naming its key under policy.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, _, err := c.ListenAddr(); err != nil {
		bad("listen", "%v", err)
	}
	if _, err := c.SocketMode(); err != nil {
		bad("mode", "%v", err)
	}
	if _, err := prefixes.ParseList(c.AllowPeers); err != nil {
		bad("allow_peers", "%v", err)
	}
	for _, u := range c.PeerUsers {
		if strings.TrimSpace(u) == "" {
			bad("peer_users", "empty name")
		}
	}
	if c.Hostname == "" || !smtpcheck.ValidDomain(c.Hostname) {
		bad("hostname", "want a host name, got %q", c.Hostname)
	}
	if _, err := c.allowlist(); err != nil {
		bad("allowlist", "%v", err)
	}
	if c.Resolver != "" {
		if _, _, err := net.SplitHostPort(c.Resolver); err != nil {
			bad("resolver", "want host:port, got %q", c.Resolver)
		}
	}
	l := c.Limits
	if l.MaxAttributeLength < 64 {
		bad("limits.max_attribute_length", "must be ≥ 64, got %d", l.MaxAttributeLength)
	}
	if l.MaxAttributes < 10 {
		bad("limits.max_attributes", "must be ≥ 10, got %d", l.MaxAttributes)
	}
	if l.MaxRequestBytes < 1024 {
		bad("limits.max_request_bytes", "must be ≥ 1024, got %d", l.MaxRequestBytes)
	}
	if l.IdleTimeout <= 0 || l.RequestTimeout <= 0 {
		bad("limits", "idle_timeout and request_timeout must be > 0")
	}
	if l.MaxConnections < 1 {
		bad("limits.max_connections", "must be ≥ 1, got %d", l.MaxConnections)
	}
	action := func(key string, a Action, allowed ...Action) {
		for _, x := range allowed {
			if a == x {
				return
			}
		}
		bad(key, "want one of %v, got %q", allowed, a)
	}
	ch := c.Checks
	action("checks.blocklist", ch.Blocklist, Reject, Defer, Disconnect, Warn, Off)
	action("checks.helo_deny", ch.HeloDeny, Reject, Defer, Warn, Off)
	action("checks.helo_fqdn", ch.HeloFQDN, Reject, Defer, Warn, Off)
	action("checks.dnsbl", ch.DNSBL, Reject, Defer, Warn, Off)
	action("checks.fcrdns", ch.FCrDNS, Reject, Defer, Warn, Off)
	for _, s := range c.DNSBL.Sites {
		if _, err := smtpcheck.ParseSite(s); err != nil {
			bad("dnsbl.sites", "%v", err)
		}
	}
	if len(c.DNSBL.Sites) > 0 && c.DNSBL.Threshold < 1 {
		bad("dnsbl.threshold", "must be ≥ 1, got %d", c.DNSBL.Threshold)
	}
	if (len(c.DNSBL.Sites) > 0 || ch.FCrDNS != Off) && (c.DNSBL.Timeout <= 0 || c.DNSBL.Timeout.D() > MaxDNSTimeout) {
		bad("dnsbl.timeout", "must be > 0 and ≤ %s, got %s (it is every request's DNS budget, DNSBL and FCrDNS together; keep it under half of check_policy_service's timeout, or Postfix gives up and applies default_action)",
			MaxDNSTimeout, c.DNSBL.Timeout)
	}
	if c.Greylist.Enabled {
		action("greylist.action", c.Greylist.Action, Reject, Defer, Warn)
		if err := c.Greylist.Config.Validate(); err != nil {
			for _, e := range unjoin(err) {
				errs = append(errs, fmt.Errorf("policy.greylist.%w", e))
			}
		}
	}
	rl := c.RateLimit
	for i, l := range rl.Limits {
		if l.Count < 1 || l.Window <= 0 {
			bad(fmt.Sprintf("rate_limit.limits[%d]", i), "want count ≥ 1 and window > 0, got [%d, %s]", l.Count, l.Window)
		}
	}
	if len(rl.Limits) > 0 {
		if rl.CountAt != "rcpt" && rl.CountAt != "end_of_message" {
			bad("rate_limit.count_at", "want rcpt or end_of_message, got %q", rl.CountAt)
		}
		action("rate_limit.action", rl.Action, Reject, Defer, Warn)
		if rl.MaxKeys < 1 {
			bad("rate_limit.max_keys", "must be ≥ 1, got %d", rl.MaxKeys)
		}
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Warnings lists what is allowed but probably not meant, each starting
// with its key under policy.
func (c *Config) Warnings() []string {
	if !c.Enabled {
		return nil
	}
	var ws []string
	if network, addr, err := c.ListenAddr(); err == nil && network == "tcp" {
		host, _, _ := net.SplitHostPort(addr)
		if a, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !a.Unmap().IsLoopback()) {
			ws = append(ws, fmt.Sprintf("listen: %q is not a loopback address: hosts that reach it (and allow_peers lets in) can ask about any client; prefer unix:/var/spool/postfix/private/mxguard", c.Listen))
		}
		if c.InetEvidence {
			ws = append(ws, "inet_evidence: true: every local user who can connect to the port can get any address banned; prefer a unix socket, whose peers are checked (peer_users)")
		}
	}
	return ws
}
