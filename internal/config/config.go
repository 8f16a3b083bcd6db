// Package config loads the mxguard configuration: one YAML file, strictly
// decoded (an unknown key is an error naming the key, its section and its
// line), with a default for every key so that no file is needed for a
// first run.
package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/accessmap"
	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/dnsbl"
	"github.com/mxguard/mxguard/actions/firewall"
	"github.com/mxguard/mxguard/actions/sessions"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/journal"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/policy"
	"github.com/mxguard/mxguard/smtpguard"
)

// DefaultPath is read when no --config is given, if it exists.
const DefaultPath = "/etc/mxguard/mxguard.yaml"

// Config is the whole configuration file.
type Config struct {
	// Logs are the files the daemon tails (and the default input of replay).
	Logs []string `yaml:"logs"`
	// logLines are the file's line numbers of the Logs entries (Parse),
	// for Validate's messages.
	logLines []int
	// StateDir holds the bbolt database (mxguard.db) with the block list
	// and the tail checkpoints.
	StateDir string `yaml:"state_dir"`
	// ControlSocket is the Unix socket the CLI talks to the daemon over.
	ControlSocket string `yaml:"control_socket"`
	// DryRun logs would-be bans and touches neither store nor firewall.
	DryRun bool `yaml:"dry_run"`
	// Allowlist: addresses and CIDRs never banned (loopback and the host's
	// own addresses always are).
	Allowlist []string `yaml:"allowlist"`
	// Ban: durations, escalation and the broadest prefix allowed.
	Ban ban.Config `yaml:"ban"`
	// Detectors: the `detectors:` section (see detectors.Config).
	Detectors detectors.Config `yaml:"detectors"`
	// Actions: where bans are carried out besides the bbolt block list.
	Actions Actions `yaml:"actions"`
	// Guard is the inline SMTP guard's section (see smtpguard.Config);
	// GuardConfig fills in what depends on other keys.
	Guard smtpguard.Config `yaml:"guard"`
	// Policy is the Postfix policy service's section (see policy.Config);
	// PolicyConfig fills in what depends on other keys.
	Policy policy.Config `yaml:"policy"`
	// MetricsListen is the Prometheus endpoint (host:port); empty = off.
	MetricsListen string `yaml:"metrics_listen"`
	// LogLevel: debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat: text or json.
	LogFormat string `yaml:"log_format"`
	// Tail tunes the log follower.
	Tail Tail `yaml:"tail"`
	// Publish: where mxguard publishes its bans for others (a DNSBL zone).
	Publish Publish `yaml:"publish"`
	// Peers are other mxguard hosts whose DNSBL zones are followed and
	// whose bans are mirrored here (see internal/peers).
	Peers []peers.Config `yaml:"peers"`

	// Path is the file the config was read from ("" = built-in defaults).
	Path string `yaml:"-"`

	// lines maps the keys written in the file ("ban.base", "logs[0]") to
	// their line, so that Validate and Warnings can name it.
	lines map[string]int
}

// Actions is the `actions:` section.
type Actions struct {
	IPTables      firewall.IPTablesConfig `yaml:"iptables"`
	IPSet         firewall.IPSetConfig    `yaml:"ipset"`
	NFTables      firewall.NFTablesConfig `yaml:"nftables"`
	PostfixAccess accessmap.Config        `yaml:"postfix_access"`
	KillSessions  sessions.Config         `yaml:"kill_sessions"`
}

// Publish is the `publish:` section.
type Publish struct {
	DNSBL dnsbl.Config `yaml:"dnsbl"`
}

// Tail is the `tail:` section.
type Tail struct {
	// Poll stats the files instead of using inotify (network file
	// systems, some containers). Default: false.
	Poll bool `yaml:"poll"`
	// FromEnd: a log without a saved position is read from its end (only
	// new lines count). false reads it from the start. Default: true.
	FromEnd bool `yaml:"from_end"`
	// CheckpointInterval is how often read positions are saved (and at
	// shutdown). Default: 5s.
	CheckpointInterval detectors.Duration `yaml:"checkpoint_interval"`
	// TZ is the time zone of log stamps that carry none (BSD syslog,
	// maillog_file): Local, UTC or an IANA name. Default: Local.
	TZ string `yaml:"tz"`
}

// Location returns the zone of Tail.TZ (Local when empty or invalid;
// Validate reports an invalid one).
func (t Tail) Location() *time.Location {
	if t.TZ == "" {
		return time.Local
	}
	loc, err := time.LoadLocation(t.TZ)
	if err != nil {
		return time.Local
	}
	return loc
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	return &Config{
		Logs:          []string{"/var/log/mail.log"},
		StateDir:      "/var/lib/mxguard",
		ControlSocket: "/run/mxguard/control.sock",
		Allowlist:     []string{"127.0.0.0/8", "::1/128"},
		Ban:           ban.DefaultConfig(),
		Detectors:     detectors.DefaultConfig(),
		Actions: Actions{
			IPTables:      firewall.DefaultIPTablesConfig(),
			IPSet:         firewall.DefaultIPSetConfig(),
			NFTables:      firewall.DefaultNFTablesConfig(),
			PostfixAccess: accessmap.DefaultConfig(),
			KillSessions:  sessions.DefaultConfig(),
		},
		Guard:     smtpguard.DefaultConfig(),
		Policy:    policy.DefaultConfig(),
		LogLevel:  "info",
		LogFormat: "text",
		Tail:      Tail{FromEnd: true, CheckpointInterval: detectors.Duration(5 * time.Second), TZ: "Local"},
		Publish:   Publish{DNSBL: dnsbl.DefaultConfig()},
	}
}

// Find returns the config file to read: flagValue if set, else DefaultPath
// if it exists, else "" (built-in defaults).
func Find(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if _, err := os.Stat(DefaultPath); err == nil {
		return DefaultPath
	}
	return ""
}

// Load reads and validates path; "" returns the validated defaults. Every
// error names the file.
func Load(path string) (*Config, error) {
	if path == "" {
		c := Default()
		return c, c.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.Path = path
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults (absent keys keep their default).
// It does not validate values; Load does.
func Parse(b []byte) (*Config, error) {
	c := Default()
	if len(bytes.TrimSpace(b)) == 0 {
		return c, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, cleanYAMLError(err)
	}
	if len(doc.Content) == 0 {
		return c, nil
	}
	root := doc.Content[0]
	if isNull(root) {
		return c, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of keys (logs:, state_dir:, ...) at the top level", root.Line)
	}
	if errs := CheckKeys(root, reflect.TypeOf(c).Elem(), ""); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, nameKeys(cleanYAMLError(err), root)
	}
	// Only the first document is read: one after it would be ignored
	// silently, whatever it says.
	var next yaml.Node
	if err := dec.Decode(&next); err == nil && len(next.Content) > 0 && !isNull(next.Content[0]) {
		return nil, fmt.Errorf("line %d: a second YAML document (after ---): mxguard reads one; merge it into the first", next.Content[0].Line)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, cleanYAMLError(err)
	}
	c.lines, _ = keyLines(root)
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k, v := root.Content[i], root.Content[i+1]; k.Value == "logs" && v.Kind == yaml.SequenceNode {
			for _, item := range v.Content {
				c.logLines = append(c.logLines, item.Line)
			}
		}
	}
	return c, nil
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// cleanYAMLError drops the "yaml: " prefixes and the "unmarshal errors:"
// header of yaml.v3 errors, which read badly after "config FILE: ".
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, 0, len(te.Errors))
		for _, e := range te.Errors {
			errs = append(errs, errors.New(strings.TrimPrefix(e, "yaml: ")))
		}
		return errors.Join(errs...)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// keyLines maps every key of the document to its line ("ban.base",
// "logs[0]") and every line to the (last) key on it.
func keyLines(root *yaml.Node) (lineOf map[string]int, keyOn map[int]string) {
	lineOf, keyOn = map[string]int{}, map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := join(path, k.Value)
				keyOn[k.Line] = p
				if _, ok := lineOf[p]; !ok {
					lineOf[p] = k.Line
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, ok := keyOn[c.Line]; !ok {
					keyOn[c.Line] = p
				}
				lineOf[p] = c.Line
				walk(c, p)
			}
		}
	}
	walk(root, "")
	return lineOf, keyOn
}

// lineOf returns the line of key in the file, or of its nearest enclosing
// key written there; 0 when neither is (a default).
func (c *Config) lineOf(key string) int {
	for key != "" {
		if l, ok := c.lines[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
	return 0
}

// withLine prefixes a message that starts with its key ("ban.base: ...",
// "ban.factor must ...") with the key's line in the file.
func (c *Config) withLine(msg string) string {
	if strings.HasPrefix(msg, "line ") {
		return msg
	}
	key := msg
	if i := strings.IndexAny(key, ": "); i >= 0 {
		key = key[:i]
	}
	if l := c.lineOf(key); l > 0 {
		return fmt.Sprintf("line %d: %s", l, msg)
	}
	return msg
}

// nameKeys appends the key to "line N: ..." errors (a bad value: yaml.v3
// names only the line).
func nameKeys(err error, root *yaml.Node) error {
	_, keys := keyLines(root)
	var out []error
	for _, e := range unjoin(err) {
		var line int
		if _, serr := fmt.Sscanf(e.Error(), "line %d:", &line); serr == nil && keys[line] != "" {
			e = fmt.Errorf("%w (key %s)", e, keys[line])
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// GuardConfig is the guard's effective configuration: the greylist
// database lives in state_dir unless guard.greylist.db names one.
func (c *Config) GuardConfig() smtpguard.Config {
	g := c.Guard
	if g.Greylist.DB == "" {
		g.Greylist.DB = filepath.Join(c.StateDir, "greylist.db")
	}
	return g
}

// PeersConfig is the peers with their defaults filled in.
func (c *Config) PeersConfig() []peers.Config {
	out := make([]peers.Config, len(c.Peers))
	for i, p := range c.Peers {
		out[i] = p.WithDefaults()
	}
	return out
}

// PolicyConfig is the policy service's effective configuration: the
// greylist database lives in state_dir unless policy.greylist.db names
// one (the guard's, when both greylist: one store).
func (c *Config) PolicyConfig() policy.Config {
	p := c.Policy
	if p.Greylist.DB == "" {
		p.Greylist.DB = filepath.Join(c.StateDir, "greylist.db")
	}
	return p
}

// DBPath is the bbolt database in StateDir.
func (c *Config) DBPath() string { return filepath.Join(c.StateDir, "mxguard.db") }

// Level returns the slog level of LogLevel (info if unknown).
func (c *Config) Level() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Marshal renders the effective configuration as YAML: every key, with
// the defaults and the values derived from other keys filled in.
func (c *Config) Marshal() ([]byte, error) {
	eff := *c
	eff.Guard = c.GuardConfig()
	eff.Peers = c.PeersConfig()
	eff.Policy = c.PolicyConfig()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&eff); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Validate reports every problem, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	prefixed := func(key string, err error) {
		if err == nil {
			return
		}
		for _, e := range unjoin(err) {
			s := e.Error()
			if !strings.HasPrefix(s, key) {
				s = key + "." + s
			}
			errs = append(errs, errors.New(s))
		}
	}

	seen := map[string]bool{}
	journals := 0
	for i, l := range c.Logs {
		at := ""
		if i < len(c.logLines) {
			at = fmt.Sprintf("line %d: ", c.logLines[i])
		}
		if journal.IsJournal(l) {
			if _, err := journal.NewFilter(l); err != nil {
				add("%slogs[%d]: %v", at, i, err)
			}
			if journals++; journals == 2 {
				add("%slogs[%d]: %q: the journal is listed twice (name every identifier in one entry: journal:ID1,ID2)", at, i, l)
			}
			continue
		}
		switch {
		case strings.TrimSpace(l) == "":
			add("%slogs[%d]: empty path", at, i)
		case !filepath.IsAbs(l):
			add("%slogs[%d]: %q: want an absolute path, journal or journal:ID1,ID2", at, i, l)
		case seen[filepath.Clean(l)]:
			add("%slogs[%d]: %q listed twice", at, i, l)
		}
		seen[filepath.Clean(l)] = true
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		add("state_dir: %q: want an absolute path", c.StateDir)
	}
	switch {
	case c.ControlSocket == "" || !filepath.IsAbs(c.ControlSocket):
		add("control_socket: %q: want an absolute path", c.ControlSocket)
	case len(c.ControlSocket) > 100:
		add("control_socket: %q: too long for a Unix socket (max 100 bytes)", c.ControlSocket)
	}
	for i, a := range c.Allowlist {
		if _, err := ban.ParseAllowEntry(a); err != nil {
			add("allowlist[%d]: %v", i, err)
		}
	}
	// The ban manager takes a zero for "the default": refuse one written
	// in the file rather than show 0 and run with something else (0 could
	// as well be read as "no limit", "no escalation" or "never forget").
	def := ban.DefaultConfig()
	for _, z := range []struct {
		key       string
		zero      bool
		value, to string // as written, and the default
	}{
		{"base", c.Ban.Base == 0, c.Ban.Base.String(), def.Base.String()},
		{"factor", c.Ban.Factor == 0, "0", fmt.Sprint(def.Factor)},
		{"max", c.Ban.Max == 0, c.Ban.Max.String(), def.Max.String()},
		{"forget_after", c.Ban.ForgetAfter == 0, c.Ban.ForgetAfter.String(), def.ForgetAfter.String()},
		{"ledger_retention", c.Ban.LedgerRetention == 0, c.Ban.LedgerRetention.String(), def.LedgerRetention.String()},
		{"max_prefix_v4", c.Ban.MaxPrefixV4 == 0, "0", fmt.Sprint(def.MaxPrefixV4)},
		{"max_prefix_v6", c.Ban.MaxPrefixV6 == 0, "0", fmt.Sprint(def.MaxPrefixV6)},
	} {
		if z.zero {
			add("ban.%s: %s is not a usable value (a zero stands for the default): leave the key out for the default %s, or give another value", z.key, z.value, z.to)
		}
	}
	prefixed("ban", c.Ban.WithDefaults().Validate())
	prefixed("detectors", c.Detectors.Validate())
	prefixed("actions.iptables", c.Actions.IPTables.IPTablesChainConfig.Validate())
	prefixed("actions.ipset", c.Actions.IPSet.Validate())
	prefixed("actions.nftables", c.Actions.NFTables.Validate())
	prefixed("actions.postfix_access", c.Actions.PostfixAccess.Validate())
	prefixed("actions.kill_sessions", c.Actions.KillSessions.Validate())
	if c.Actions.IPTables.Enabled && c.Actions.IPSet.Enabled && c.Actions.IPTables.Chain == c.Actions.IPSet.Chain {
		add("actions.ipset.chain: %q is also actions.iptables.chain: give each action its own chain (or enable one of them)", c.Actions.IPSet.Chain)
	}
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			add("metrics_listen: %q: want host:port, e.g. 127.0.0.1:9419", c.MetricsListen)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			add("metrics_listen: bad port in %q: want 0 to 65535", c.MetricsListen)
		}
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		add("log_level: %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		add("log_format: %q: want text or json", c.LogFormat)
	}
	if c.Tail.TZ != "" {
		if _, err := time.LoadLocation(c.Tail.TZ); err != nil {
			add("tail.tz: %v", err)
		}
	}
	if c.Tail.CheckpointInterval <= 0 {
		add("tail.checkpoint_interval: must be > 0, got %s", c.Tail.CheckpointInterval)
	}
	prefixed("guard", c.Guard.Validate())
	prefixed("publish.dnsbl", c.Publish.DNSBL.Validate())
	prefixed("peers", peers.ValidateAll(c.PeersConfig()))
	for i, p := range c.Peers {
		// as for ban:, a zero written in the file is refused rather than
		// taken for the default
		if _, written := c.lines[fmt.Sprintf("peers[%d].max_ban", i)]; written && p.MaxBan == 0 {
			add("peers[%d].max_ban: 0 is not a usable value: leave the key out for the default %s", i, duration.Duration(peers.DefaultMaxBan))
		}
		if _, written := c.lines[fmt.Sprintf("peers[%d].max_entries", i)]; written && p.MaxEntries == 0 {
			add("peers[%d].max_entries: 0 is not a usable value: leave the key out for the default %d", i, peers.DefaultMaxEntries)
		}
	}
	errs = append(errs, c.fleetErrors()...)
	if t := c.Guard.TLS; t.Cert != "" && t.Key != "" {
		errs = append(errs, checkKeyPair(t.Cert, t.Key)...)
	}
	if err := c.Policy.Validate(); err != nil { // its errors name policy.KEY
		errs = append(errs, unjoin(err)...)
	}
	if g, p := c.GuardConfig(), c.PolicyConfig(); g.Greylist.Enabled && p.Greylist.Enabled && g.Greylist.DB == p.Greylist.DB {
		if k := greylist.SameStore(g.Greylist, p.Greylist.Config); k != "" {
			add("policy.greylist.%s: differs from guard.greylist.%s; guard and policy service share one greylist store (%s): give both the same value, or each its own db", k, k, g.Greylist.DB)
		}
	}
	for i, e := range errs {
		errs[i] = errors.New(c.withLine(e.Error()))
	}
	return errors.Join(errs...)
}

// fleetErrors are the mistakes between publish.dnsbl and peers: a host
// following its own zone, a NOTIFY listener on the DNSBL's own address,
// an rbldnsd file where it may be lost or clash with the state.
func (c *Config) fleetErrors() []error {
	d := c.Publish.DNSBL
	if !d.Enabled {
		return nil
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if f := d.RbldnsdFile; f != "" {
		switch rel, err := filepath.Rel(filepath.Clean(c.StateDir), filepath.Clean(f)); {
		case !filepath.IsAbs(f):
			add("publish.dnsbl.rbldnsd_file: %q: want an absolute path", f)
		case c.StateDir != "" && err == nil && rel != ".." && !strings.HasPrefix(rel, "../"):
			add("publish.dnsbl.rbldnsd_file: %q is inside state_dir (%s): rbldnsd reads it; keep it out of mxguard's state", f, c.StateDir)
		}
	}
	for i, p := range c.Peers {
		if p.Zone != "" && d.Zone != "" && strings.EqualFold(dns.CanonicalName(p.Zone), dns.CanonicalName(d.Zone)) {
			add("peers[%d].zone: %q is publish.dnsbl.zone: a host does not follow its own zone", i, p.Zone)
		}
		if p.NotifyListen != "" && sameHostPort(p.NotifyListen, d.Listen) {
			add("peers[%d].notify_listen: %q is publish.dnsbl.listen: the DNSBL server answers there; NOTIFYs need their own port", i, p.NotifyListen)
		}
	}
	return errs
}

// sameHostPort reports whether two listen addresses are the same (an
// empty or unspecified host is every address).
func sameHostPort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	ia, errA := netip.ParseAddr(ha)
	ib, errB := netip.ParseAddr(hb)
	every := func(h string, ip netip.Addr, err error) bool { return h == "" || err == nil && ip.IsUnspecified() }
	if every(ha, ia, errA) || every(hb, ib, errB) {
		return true
	}
	if errA == nil && errB == nil {
		return ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(ha, hb)
}

// checkKeyPair reports a guard certificate or key that is missing or does
// not load, now rather than at the first STARTTLS.
func checkKeyPair(cert, key string) []error {
	var errs []error
	for _, f := range []struct{ key, path string }{{"guard.tls.cert", cert}, {"guard.tls.key", key}} {
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.key, err))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		return []error{fmt.Errorf("guard.tls.cert: %q with guard.tls.key %q does not load: %w", cert, key, err)}
	}
	return nil
}

// Warnings lists what is allowed but probably not meant, each naming its
// key (and its line when it is written in the file).
func (c *Config) Warnings() []string {
	var ws []string
	if host, port, err := net.SplitHostPort(c.MetricsListen); err == nil && c.MetricsListen != "" {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			ws = append(ws, c.withLine(fmt.Sprintf("metrics_listen: %q binds all interfaces: anyone who reaches the port reads the counters (detectors, log paths); bind 127.0.0.1:%s or filter the port", c.MetricsListen, port)))
		}
	}
	for _, w := range c.Detectors.Warnings() {
		ws = append(ws, c.withLine(w))
	}
	for _, w := range c.Publish.DNSBL.Warnings() {
		ws = append(ws, c.withLine("publish.dnsbl."+w))
	}
	for _, w := range c.Policy.Warnings() {
		ws = append(ws, c.withLine("policy."+w))
	}
	return ws
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}
