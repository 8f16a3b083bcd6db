package detectors

import (
	"errors"
	"fmt"
	"time"

	"github.com/mxguard/mxguard/internal/duration"
)

// Detector names, as used in the config, in Decision.Detector and in Stats.
const (
	Dictionary     = "dictionary"
	ErrorBurst     = "error_burst"
	Pipelining     = "pipelining"
	Pregreet       = "pregreet"
	SASLBruteforce = "sasl_bruteforce"
	RelayProbe     = "relay_probe"
	DNSBL          = "dnsbl"
	BadHelo        = "bad_helo"
	Flood          = "flood"
	AdminReject    = "admin_reject"
	ContentReject  = "content_reject"
	SASLSpray      = "sasl_spray"
	Score          = "score"
	// PrefixEscalation is the Decision.Detector of a decision made for a
	// whole prefix because several of its addresses were decided.
	PrefixEscalation = "prefix_escalation"
)

// Names lists the detector names in a fixed order (without
// PrefixEscalation, which is not a detector of its own).
func Names() []string {
	return []string{Dictionary, ErrorBurst, Pipelining, Pregreet, SASLBruteforce, RelayProbe, DNSBL, BadHelo,
		Flood, AdminReject, ContentReject, SASLSpray, Score}
}

// Mode says what a detector's decisions are for.
type Mode string

const (
	ModeBan  Mode = "ban"  // the decision asks for a ban
	ModeWarn Mode = "warn" // the decision is only logged (Decision.Warn)
)

// Duration is the config's duration ("10m", "1h", "7d"; see internal/duration).
type Duration = duration.Duration

// Rule is the part of a detector's configuration that every detector has.
//
// A detector decides when Threshold events of its kind from one client fall
// within Window. After a decision the detector stays quiet for that client
// for one Window (the ban manager handles repeat offenders).
type Rule struct {
	Enabled   bool     `yaml:"enabled" json:"enabled"`
	Threshold int      `yaml:"threshold" json:"threshold"`
	Window    Duration `yaml:"window" json:"window"`
	Mode      Mode     `yaml:"mode" json:"mode"` // ban | warn
}

// DictionaryRule configures dictionary.
type DictionaryRule struct {
	Rule `yaml:",inline"`
	// PerPrefix also counts distinct unknown recipients across the
	// addresses of one prefix (prefix_escalation.v4_bits / v6_bits) and
	// decides for the prefix when PrefixThreshold distinct recipients from
	// at least PrefixAddresses of its addresses fall within PrefixWindow,
	// unless the prefix had as many accepted messages as rejects in that
	// window. Default: true.
	PerPrefix bool `yaml:"per_prefix" json:"per_prefix"`
	// PrefixThreshold: distinct unknown recipients per prefix. Default: 15.
	PrefixThreshold int `yaml:"prefix_threshold" json:"prefix_threshold"`
	// PrefixAddresses: distinct addresses of the prefix among them. Default: 3.
	PrefixAddresses int `yaml:"prefix_addresses" json:"prefix_addresses"`
	// PrefixWindow: the prefix's window. Default: 1h.
	PrefixWindow Duration `yaml:"prefix_window" json:"prefix_window"`
}

// SASLRule configures sasl_bruteforce.
type SASLRule struct {
	Rule `yaml:",inline"`
	// LongThreshold failures within LongWindow also decide: a guesser
	// that stays under Threshold per Window ("low and slow"). 0 turns the
	// long window off, and so does a LongThreshold not above Threshold or
	// a LongWindow not longer than Window (a config written for a lenient
	// threshold keeps working as it did). Default: 8.
	LongThreshold int `yaml:"long_threshold" json:"long_threshold"`
	// LongWindow is the long window. Default: 6h.
	LongWindow Duration `yaml:"long_window" json:"long_window"`
	// PerPrefix also counts failures across all addresses of one prefix
	// (prefix_escalation.v4_bits / v6_bits, default /24 and /64) and
	// decides for the prefix at PrefixThreshold failures within Window.
	// Default: false.
	PerPrefix bool `yaml:"per_prefix" json:"per_prefix"`
	// PrefixThreshold is the failure count for PerPrefix. Default: 10.
	PrefixThreshold int `yaml:"prefix_threshold" json:"prefix_threshold"`
	// CountDisconnectAuth counts failed AUTH commands from the statistics
	// of "disconnect from" lines (auth=0/3 is 3 failures). Postfix logs
	// both a SASL warning and the statistic for the same failure, so turn
	// this on only when the SASL warnings are not in the log. Default: false.
	CountDisconnectAuth bool `yaml:"count_disconnect_auth" json:"count_disconnect_auth"`
}

// LongActive reports whether the long window is in effect.
func (r SASLRule) LongActive() bool {
	return r.LongThreshold > r.Threshold && r.LongWindow > r.Window
}

// DNSBLRule configures dnsbl. Threshold is the postscreen DNSBL rank that
// decides at once; Rejects is how many smtpd "blocked using" rejects
// within Window decide.
type DNSBLRule struct {
	Rule    `yaml:",inline"`
	Rejects int `yaml:"rejects" json:"rejects"` // Default: 1.
}

// EscalationConfig configures prefix escalation: when Count distinct
// addresses of one prefix are decided (in ban mode) within Window, the
// engine also decides for the prefix.
type EscalationConfig struct {
	Enabled bool     `yaml:"enabled" json:"enabled"` // Default: false.
	Count   int      `yaml:"count" json:"count"`     // Default: 5.
	Window  Duration `yaml:"window" json:"window"`   // Default: 1h.
	V4Bits  int      `yaml:"v4_bits" json:"v4_bits"` // Default: 24.
	V6Bits  int      `yaml:"v6_bits" json:"v6_bits"` // Default: 64.
	Mode    Mode     `yaml:"mode" json:"mode"`       // Default: ban.
}

// FloodRule configures flood: connections that end before any mail
// transaction (lost connection or timeout after EHLO, HELO, lost
// connection after STARTTLS, timeout after CONNECT), postscreen HANGUP,
// failed TLS handshakes (an SSL_accept error and the lost connection of
// the same session count once; a "TLS library problem" line never counts
// on its own) and anvil's connection rate and new TLS session limits
// (not the message and recipient rate limits: busy legitimate senders
// meet those), Threshold of them within Window. The connection
// concurrency limit counts at most once per Window: a relay reconnecting
// its backlog meets it many times in a row. A client that had mail
// accepted within the last two windows is not decided (a relay restarting
// drops all its open sessions at once). The default 8 in 1m stays far
// above a monitoring probe (one a minute) and catches the lab's scanners.
type FloodRule struct {
	Rule `yaml:",inline"`
	// ConnectDropsThreshold: connections closed right after connecting
	// without any error ("lost connection after CONNECT": port scans, but
	// also TCP health checks of load balancers and Kubernetes, often
	// every 5 s) are counted on their own and decide only at this many
	// within Window. Allowlist health checkers anyway. Default: 30.
	ConnectDropsThreshold int `yaml:"connect_drops_threshold" json:"connect_drops_threshold"`
}

// SprayRule configures sasl_spray: Threshold distinct SASL usernames
// failing within Window from one address. A successful login takes its
// own username back out of the window.
type SprayRule = Rule

// ScoreWeights are the points one event of each class adds to a client's
// score. 0 turns a class off.
type ScoreWeights struct {
	NoHelo               float64 `yaml:"no_helo" json:"no_helo"`                                 // MAIL without HELO/EHLO (disconnect statistics)
	VRFY                 float64 `yaml:"vrfy" json:"vrfy"`                                       // a session that used VRFY or EXPN (disconnect statistics)
	SenderNonFQDN        float64 `yaml:"sender_non_fqdn" json:"sender_non_fqdn"`                 // reject: sender needs a fully-qualified address
	SenderDomainNotFound float64 `yaml:"sender_domain_not_found" json:"sender_domain_not_found"` // reject: sender domain not found
	RecipientNonFQDN     float64 `yaml:"recipient_non_fqdn" json:"recipient_non_fqdn"`           // reject: recipient needs a fully-qualified address
	HeloReject           float64 `yaml:"helo_reject" json:"helo_reject"`                         // any HELO reject
	MultiRecipientBounce float64 `yaml:"multi_recipient_bounce" json:"multi_recipient_bounce"`   // reject: multi-recipient bounce
	Backscatter          float64 `yaml:"backscatter" json:"backscatter"`                         // a null-sender (bounce) message rejected at RCPT
	HostnameMismatch     float64 `yaml:"hostname_mismatch" json:"hostname_mismatch"`             // warning: hostname does not resolve to address
	RelayDenied          float64 `yaml:"relay_denied" json:"relay_denied"`                       // reject: relay access denied
	Pipelining           float64 `yaml:"pipelining" json:"pipelining"`                           // improper command pipelining
	UnknownRecipient     float64 `yaml:"unknown_recipient" json:"unknown_recipient"`             // reject: unknown recipient
	AuthRequired         float64 `yaml:"auth_required" json:"auth_required"`                     // reject: authentication required
	DNSBL                float64 `yaml:"dnsbl" json:"dnsbl"`                                     // a DNSBL listing below the dnsbl detector's threshold
}

// ScoreRule configures score: every event of a weighted class adds its
// weight to the client's score, which halves every HalfLife; each class
// adds at most ClassCap times its weight, so one repeated weak signal
// never decides alone (its own rate detector is for that). The client is
// decided when the score reaches Threshold.
type ScoreRule struct {
	Enabled   bool         `yaml:"enabled" json:"enabled"`     // Default: true.
	Threshold float64      `yaml:"threshold" json:"threshold"` // Default: 10.
	HalfLife  Duration     `yaml:"half_life" json:"half_life"` // Default: 30m.
	ClassCap  float64      `yaml:"class_cap" json:"class_cap"` // Default: 2.
	Mode      Mode         `yaml:"mode" json:"mode"`           // Default: ban.
	Weights   ScoreWeights `yaml:"weights" json:"weights"`
}

// Config is the `detectors:` section of the mxguard config.
type Config struct {
	Dictionary     DictionaryRule `yaml:"dictionary" json:"dictionary"`
	ErrorBurst     Rule           `yaml:"error_burst" json:"error_burst"`
	Pipelining     Rule           `yaml:"pipelining" json:"pipelining"`
	Pregreet       Rule           `yaml:"pregreet" json:"pregreet"`
	SASLBruteforce SASLRule       `yaml:"sasl_bruteforce" json:"sasl_bruteforce"`
	RelayProbe     Rule           `yaml:"relay_probe" json:"relay_probe"`
	DNSBL          DNSBLRule      `yaml:"dnsbl" json:"dnsbl"`
	BadHelo        Rule           `yaml:"bad_helo" json:"bad_helo"`
	Flood          FloodRule      `yaml:"flood" json:"flood"`
	// AdminReject: the client was refused by the administrator's own
	// access lists (check_client_access, postscreen's denylist).
	AdminReject Rule `yaml:"admin_reject" json:"admin_reject"`
	// ContentReject: header/body checks and milters rejected its messages.
	ContentReject Rule      `yaml:"content_reject" json:"content_reject"`
	SASLSpray     SprayRule `yaml:"sasl_spray" json:"sasl_spray"`
	Score         ScoreRule `yaml:"score" json:"score"`

	// MaxClients caps the tracked addresses (and, separately, the tracked
	// prefixes); the least recently seen are dropped first. Default: 100000.
	MaxClients int `yaml:"max_clients" json:"max_clients"`
	// EvidenceLines is how many raw log lines a Decision keeps. Default: 5.
	EvidenceLines    int              `yaml:"evidence_lines" json:"evidence_lines"`
	PrefixEscalation EscalationConfig `yaml:"prefix_escalation" json:"prefix_escalation"`
}

func rule(threshold int, window time.Duration) Rule {
	return Rule{Enabled: true, Threshold: threshold, Window: Duration(window), Mode: ModeBan}
}

// DefaultConfig returns the defaults. Decode YAML into it so that keys left
// out keep their default.
func DefaultConfig() Config {
	return Config{
		Dictionary: DictionaryRule{Rule: rule(5, 10*time.Minute), PerPrefix: true,
			PrefixThreshold: 15, PrefixAddresses: 3, PrefixWindow: Duration(time.Hour)},
		ErrorBurst: rule(6, 5*time.Minute),
		Pipelining: rule(1, time.Hour),
		Pregreet:   rule(1, time.Hour),
		SASLBruteforce: SASLRule{Rule: rule(5, 10*time.Minute), PrefixThreshold: 10,
			LongThreshold: 8, LongWindow: Duration(6 * time.Hour)},
		RelayProbe:    rule(3, time.Hour),
		DNSBL:         DNSBLRule{Rule: rule(3, time.Hour), Rejects: 1},
		BadHelo:       rule(2, time.Hour),
		Flood:         FloodRule{Rule: rule(8, time.Minute), ConnectDropsThreshold: 30},
		AdminReject:   rule(3, time.Hour),
		ContentReject: rule(3, time.Hour),
		SASLSpray:     rule(4, time.Hour),
		Score: ScoreRule{Enabled: true, Threshold: 10, HalfLife: Duration(30 * time.Minute), ClassCap: 2,
			Mode: ModeBan, Weights: DefaultScoreWeights()},
		MaxClients:    100000,
		EvidenceLines: 5,
		PrefixEscalation: EscalationConfig{
			Count: 5, Window: Duration(time.Hour), V4Bits: 24, V6Bits: 64, Mode: ModeBan,
		},
	}
}

// DefaultScoreWeights returns the default score weights (see the README's
// table for why each is what it is).
func DefaultScoreWeights() ScoreWeights {
	return ScoreWeights{
		NoHelo: 3, VRFY: 2, SenderNonFQDN: 3, SenderDomainNotFound: 2, RecipientNonFQDN: 2,
		HeloReject: 2, MultiRecipientBounce: 4, Backscatter: 0.5, HostnameMismatch: 0.5,
		RelayDenied: 3, Pipelining: 4, UnknownRecipient: 0.5, AuthRequired: 1, DNSBL: 0,
	}
}

// maxWindow bounds every window and the score's half-life: a month is
// more than any detector needs, and far from where event time plus a
// window (or four half-lives) would overflow.
const maxWindow = Duration(31 * 24 * time.Hour)

// checkWindow reports a duration above maxWindow, naming key.
func checkWindow(key string, d Duration) error {
	if d > maxWindow {
		return fmt.Errorf("%s: must be at most %s, got %s", key, maxWindow, d)
	}
	return nil
}

func (r Rule) validate(name string) error {
	var errs []error
	if r.Threshold < 1 {
		errs = append(errs, fmt.Errorf("detectors.%s.threshold: must be ≥ 1, got %d", name, r.Threshold))
	}
	if r.Window <= 0 {
		errs = append(errs, fmt.Errorf("detectors.%s.window: must be > 0, got %s", name, r.Window))
	}
	if err := checkWindow("detectors."+name+".window", r.Window); err != nil {
		errs = append(errs, err)
	}
	if err := r.Mode.validate("detectors." + name + ".mode"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m Mode) validate(key string) error {
	if m != ModeBan && m != ModeWarn {
		return fmt.Errorf("%s: must be ban or warn, got %q", key, string(m))
	}
	return nil
}

// Validate checks every value and names the bad keys, e.g.
// "detectors.dictionary.threshold: must be ≥ 1, got 0". Disabled detectors
// are checked too.
func (c Config) Validate() error {
	errs := []error{
		c.Dictionary.validate(Dictionary),
		c.ErrorBurst.validate(ErrorBurst),
		c.Pipelining.validate(Pipelining),
		c.Pregreet.validate(Pregreet),
		c.SASLBruteforce.validate(SASLBruteforce),
		c.RelayProbe.validate(RelayProbe),
		c.DNSBL.validate(DNSBL),
		c.BadHelo.validate(BadHelo),
	}
	errs = append(errs,
		c.Flood.validate(Flood),
		c.AdminReject.validate(AdminReject),
		c.ContentReject.validate(ContentReject),
		c.SASLSpray.validate(SASLSpray),
		c.Score.validate())
	if c.Flood.ConnectDropsThreshold < 1 {
		errs = append(errs, fmt.Errorf("detectors.flood.connect_drops_threshold: must be ≥ 1, got %d", c.Flood.ConnectDropsThreshold))
	}
	if c.SASLSpray.Threshold < 2 {
		errs = append(errs, fmt.Errorf("detectors.sasl_spray.threshold: must be ≥ 2 (one username is sasl_bruteforce's job), got %d", c.SASLSpray.Threshold))
	}
	d := c.Dictionary
	if d.PrefixThreshold < 2 {
		errs = append(errs, fmt.Errorf("detectors.dictionary.prefix_threshold: must be ≥ 2, got %d", d.PrefixThreshold))
	}
	if d.PrefixAddresses < 2 {
		errs = append(errs, fmt.Errorf("detectors.dictionary.prefix_addresses: must be ≥ 2 (one address is the per-address rule), got %d", d.PrefixAddresses))
	}
	if d.PrefixWindow <= 0 {
		errs = append(errs, fmt.Errorf("detectors.dictionary.prefix_window: must be > 0, got %s", d.PrefixWindow))
	}
	errs = append(errs, checkWindow("detectors.dictionary.prefix_window", d.PrefixWindow),
		checkWindow("detectors.sasl_bruteforce.long_window", c.SASLBruteforce.LongWindow),
		checkWindow("detectors.prefix_escalation.window", c.PrefixEscalation.Window))
	s := c.SASLBruteforce
	if s.LongThreshold < 0 {
		errs = append(errs, fmt.Errorf("detectors.sasl_bruteforce.long_threshold: must be ≥ 0 (0 = off), got %d", s.LongThreshold))
	}
	if s.LongWindow < 0 {
		errs = append(errs, fmt.Errorf("detectors.sasl_bruteforce.long_window: must be ≥ 0, got %s", s.LongWindow))
	}
	if c.SASLBruteforce.PrefixThreshold < 1 {
		errs = append(errs, fmt.Errorf("detectors.sasl_bruteforce.prefix_threshold: must be ≥ 1, got %d", c.SASLBruteforce.PrefixThreshold))
	}
	if c.DNSBL.Rejects < 1 {
		errs = append(errs, fmt.Errorf("detectors.dnsbl.rejects: must be ≥ 1, got %d", c.DNSBL.Rejects))
	}
	if c.MaxClients < 1 {
		errs = append(errs, fmt.Errorf("detectors.max_clients: must be ≥ 1, got %d", c.MaxClients))
	}
	if c.EvidenceLines < 0 || c.EvidenceLines > 100 {
		errs = append(errs, fmt.Errorf("detectors.evidence_lines: must be between 0 and 100, got %d", c.EvidenceLines))
	}
	p := c.PrefixEscalation
	if p.Count < 2 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.count: must be ≥ 2, got %d", p.Count))
	}
	if p.Window <= 0 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.window: must be > 0, got %s", p.Window))
	}
	if p.V4Bits < 8 || p.V4Bits > 32 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.v4_bits: must be between 8 and 32, got %d", p.V4Bits))
	}
	if p.V6Bits < 16 || p.V6Bits > 128 {
		errs = append(errs, fmt.Errorf("detectors.prefix_escalation.v6_bits: must be between 16 and 128, got %d", p.V6Bits))
	}
	if err := p.Mode.validate("detectors.prefix_escalation.mode"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r ScoreRule) validate() error {
	var errs []error
	if !(r.Threshold > 0) {
		errs = append(errs, fmt.Errorf("detectors.score.threshold: must be > 0, got %g", r.Threshold))
	}
	if r.HalfLife <= 0 {
		errs = append(errs, fmt.Errorf("detectors.score.half_life: must be > 0, got %s", r.HalfLife))
	}
	if err := checkWindow("detectors.score.half_life", r.HalfLife); err != nil {
		errs = append(errs, err)
	}
	if !(r.ClassCap >= 1) {
		errs = append(errs, fmt.Errorf("detectors.score.class_cap: must be ≥ 1, got %g", r.ClassCap))
	}
	if err := r.Mode.validate("detectors.score.mode"); err != nil {
		errs = append(errs, err)
	}
	for i, w := range r.Weights.list() {
		if !(w >= 0 && w <= 1000) {
			errs = append(errs, fmt.Errorf("detectors.score.weights.%s: must be between 0 and 1000, got %g", scoreClassNames[i], w))
		}
	}
	return errors.Join(errs...)
}

// Warnings lists settings that are valid but probably not meant, each
// starting with its key.
func (c Config) Warnings() []string {
	var ws []string
	if s := c.SASLBruteforce; s.Enabled && s.LongThreshold > 0 && !s.LongActive() {
		switch {
		case s.LongWindow <= s.Window:
			ws = append(ws, fmt.Sprintf("detectors.sasl_bruteforce.long_window: %s is not longer than window %s: the long window is off", s.LongWindow, s.Window))
		default:
			ws = append(ws, fmt.Sprintf("detectors.sasl_bruteforce.long_threshold: %d is not above threshold %d: the long window is off", s.LongThreshold, s.Threshold))
		}
	}
	sc := c.Score
	if !sc.Enabled {
		return ws
	}
	var reach float64
	for i, w := range sc.Weights.list() {
		reach += w * sc.ClassCap
		if w > 0 && w*sc.ClassCap >= sc.Threshold {
			ws = append(ws, fmt.Sprintf("detectors.score.weights.%s: %g × class_cap %g reaches threshold %g alone: one repeated weak signal decides", scoreClassNames[i], w, sc.ClassCap, sc.Threshold))
		}
	}
	if reach < sc.Threshold {
		ws = append(ws, fmt.Sprintf("detectors.score.threshold: %g is above the %g all weighted classes can add together (weight × class_cap): score never decides", sc.Threshold, reach))
	}
	return ws
}
