package policy

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/actions/ban"
)

// A request the service cannot read closes that connection without a
// reply (Postfix then uses default_action); others go on.
func TestBadRequestsCloseThatConnectionOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		raw  string
	}{
		{"missing request=", nil, strings.Replace(req(), "request=smtpd_access_policy\n", "", 1)},
		{"wrong request=", nil, strings.Replace(req(), "request=smtpd_access_policy", "request=other", 1)},
		{"line without =", nil, "request=smtpd_access_policy\nnonsense\n\n"},
		{"empty name", nil, "request=smtpd_access_policy\n=x\n\n"},
		{"NUL byte", nil, strings.Replace(req(), "helo_name=mta", "helo_name=m\x00ta", 1)},
		{"NUL in a long line's tail", nil, "request=smtpd_access_policy\nccert_subject=" + strings.Repeat("a", 5000) + "\x00\n\n"},
		// many short lines under max_attributes: only max_request_bytes stops them
		{"request too large", func(c *Config) { c.Limits.MaxAttributes = 100000 }, "request=smtpd_access_policy\n" + strings.Repeat("x_attr=yyyyyyyyyy\n", 1000) + "\n"},
		{"one line too large", nil, "request=smtpd_access_policy\nsender=" + strings.Repeat("a", 20000) + "\n\n"},
		{"too many attributes", func(c *Config) { c.Limits.MaxAttributes = 20 }, req("a1", "1", "a2", "2", "a3", "3", "a4", "4", "a5", "5")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			s, path := start(t, cfg, Deps{})
			other := dial(t, path)
			if a := other.mustAsk(req()); a != "DUNNO" {
				t.Fatalf("before: %q", a)
			}
			bad := dial(t, path)
			go io.WriteString(bad.c, tc.raw) // may block when the server stops reading
			if !bad.closedWithoutReply(3 * time.Second) {
				t.Fatal("connection not closed without a reply")
			}
			if a := other.mustAsk(req()); a != "DUNNO" {
				t.Fatalf("other connection after: %q", a)
			}
			if s.Stats().BadRequests != 1 {
				t.Fatalf("BadRequests = %d", s.Stats().BadRequests)
			}
		})
	}
}

// Each limit of readRequest is reached by its own case, whatever the
// other limits.
func TestReadRequestLimits(t *testing.T) {
	shortLines := "request=smtpd_access_policy\n" + strings.Repeat("x_attr=yyyyyyyyyy\n", 1000) + "\n"
	for _, tc := range []struct {
		name string
		raw  string
		lim  readLimits
		want error
	}{
		{"many short lines: size", shortLines, readLimits{maxValue: 512, maxAttrs: 100000, maxBytes: 16384}, errTooBig},
		{"many short lines: count", shortLines, readLimits{maxValue: 512, maxAttrs: 100, maxBytes: 1 << 20}, errTooMany},
		{"one long line: size", "request=smtpd_access_policy\nsender=" + strings.Repeat("a", 20000) + "\n\n",
			readLimits{maxValue: 512, maxAttrs: 100, maxBytes: 16384}, errTooBig},
		{"within every limit", shortLines, readLimits{maxValue: 512, maxAttrs: 100000, maxBytes: 1 << 20}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := readRequest(bufio.NewReaderSize(strings.NewReader(tc.raw), 4096), &request{}, tc.lim, nil)
			if err != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// A value longer than max_attribute_length is cut, not refused: a client
// cannot skip the checks with a long address.
func TestLongValueIsCutNotRefused(t *testing.T) {
	bl := &memBlocklist{}
	bl.ban("192.0.2.10/32", false)
	_, path := start(t, testConfig(t), Deps{Blocklist: bl})
	c := dial(t, path)
	long := strings.Repeat("a", 3000) + "@remote.example"
	if a := c.mustAsk(req("sender", long, "ccert_subject", strings.Repeat("b", 9000))); !strings.HasPrefix(a, "REJECT mxguard: client") {
		t.Fatalf("banned client with a long sender: %q", a)
	}
}

func TestTimeouts(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.RequestTimeout = Duration(300 * time.Millisecond)
	cfg.Limits.IdleTimeout = Duration(600 * time.Millisecond)
	s, path := start(t, cfg, Deps{})
	// a request without its empty line
	c := dial(t, path)
	io.WriteString(c.c, "request=smtpd_access_policy\nprotocol_state=RCPT\n")
	if !c.closedWithoutReply(3 * time.Second) {
		t.Fatal("a request without its end was not closed")
	}
	// an idle connection
	idle := dial(t, path)
	if a := idle.mustAsk(req()); a != "DUNNO" {
		t.Fatal(a)
	}
	if !idle.closedWithoutReply(3 * time.Second) {
		t.Fatal("idle connection not closed")
	}
	if n := s.Stats().Timeouts; n != 2 {
		t.Fatalf("Timeouts = %d, want 2", n)
	}
}

// Beyond max_connections new connections are closed at once; those
// already open keep working.
func TestConnectionFloodBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.MaxConnections = 5
	s, path := start(t, cfg, Deps{})
	var open []*client
	for range 5 {
		c := dial(t, path)
		if a := c.mustAsk(req()); a != "DUNNO" {
			t.Fatal(a)
		}
		open = append(open, c)
	}
	for range 50 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, req())
		if _, err := bufio.NewReader(c).ReadByte(); !isClosed(err) {
			t.Fatalf("connection beyond the limit: %v, want closed", err)
		}
		c.Close()
	}
	for _, c := range open {
		if a := c.mustAsk(req()); a != "DUNNO" {
			t.Fatalf("open connection after the flood: %q", a)
		}
	}
	if st := s.Stats(); st.Refused != 50 || st.Active != 5 {
		t.Fatalf("Refused %d Active %d, want 50 and 5", st.Refused, st.Active)
	}
}

// An internal error (here a sink that panics) closes that connection
// only; the service keeps answering.
func TestInternalErrorClosesConnectionOnly(t *testing.T) {
	s, path := start(t, testConfig(t), Deps{Blocklist: panickingBlocklist{"192.0.2.66"}})
	bad := dial(t, path)
	io.WriteString(bad.c, req("client_address", "192.0.2.66"))
	if !bad.closedWithoutReply(3 * time.Second) {
		t.Fatal("not closed")
	}
	if a := dial(t, path).mustAsk(req()); a != "DUNNO" {
		t.Fatalf("after the panic: %q", a)
	}
	if s.Stats().Errors != 1 {
		t.Fatalf("Errors = %d", s.Stats().Errors)
	}
}

// panickingBlocklist fails (panics) for one address.
type panickingBlocklist struct{ addr string }

func (p panickingBlocklist) LookupEnforced(a netip.Addr, _ time.Time) (ban.Ban, bool) {
	if a.String() == p.addr {
		panic("block list failed")
	}
	return ban.Ban{}, false
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		key  string
	}{
		{"listen", func(c *Config) { c.Listen = "127.0.0.1:10040" }, "policy.listen"},
		{"relative unix", func(c *Config) { c.Listen = "unix:private/mxguard" }, "policy.listen"},
		{"mode", func(c *Config) { c.Mode = "rw" }, "policy.mode"},
		{"allow_peers", func(c *Config) { c.AllowPeers = []string{"localhost"} }, "policy.allow_peers"},
		{"dnsbl timeout over the cap", func(c *Config) {
			c.DNSBL.Sites = []string{"zen.example"}
			c.DNSBL.Timeout = Duration(time.Minute)
		}, "policy.dnsbl.timeout"},
		{"action", func(c *Config) { c.Checks.HeloFQDN = "drop" }, "policy.checks.helo_fqdn"},
		{"disconnect only for blocklist", func(c *Config) { c.Checks.HeloDeny = Disconnect }, "policy.checks.helo_deny"},
		{"rate limit", func(c *Config) { c.RateLimit.Limits = []RateLimit{{0, Duration(time.Hour)}} }, "policy.rate_limit.limits[0]"},
		{"count_at", func(c *Config) {
			c.RateLimit.Limits = []RateLimit{{1, Duration(time.Hour)}}
			c.RateLimit.CountAt = "data"
		}, "policy.rate_limit.count_at"},
		{"greylist", func(c *Config) {
			c.Greylist.Enabled = true
			c.Greylist.RetryWindow = c.Greylist.Delay
		}, "policy.greylist.retry_window"},
		{"limits", func(c *Config) { c.Limits.MaxAttributeLength = 3 }, "policy.limits.max_attribute_length"},
	} {
		c := DefaultConfig()
		c.Hostname = "mx.example.com"
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.key)
		}
	}
	c := DefaultConfig()
	c.Hostname = "mx.example.com"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

// rate_limit.limits reads [count, window] pairs and writes them back the same.
func TestRateLimitYAML(t *testing.T) {
	var c RateLimitConfig
	if err := yaml.Unmarshal([]byte("limits: [[100, 1h], [1000, 1d]]"), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Limits) != 2 || c.Limits[0].Count != 100 || c.Limits[1].Window.D() != 24*time.Hour {
		t.Fatalf("%+v", c.Limits)
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back RateLimitConfig
	if err := yaml.Unmarshal(out, &back); err != nil || len(back.Limits) != 2 || back.Limits[1] != c.Limits[1] {
		t.Fatalf("round trip %q: %+v %v", out, back.Limits, err)
	}
	for _, bad := range []string{"limits: [100]", "limits: [[x, 1h]]", "limits: [[1, soon]]", "limits: [[1, 1h, 2]]"} {
		if err := yaml.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
