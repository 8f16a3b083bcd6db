package daemon

import (
	"bufio"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/policy"
	"github.com/mxguard/mxguard/smtpguard"
)

// The policy service runs inside the daemon beside the guard: both
// greylist from one store (a second open of the bbolt file would wait
// for its lock and fail), and its events reach the daemon's pipeline.
func TestPolicyInDaemon(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.Logs = nil
	g := smtpguard.DefaultConfig()
	g.Listen, g.Upstream, g.Hostname = freeAddr(t), freeAddr(t), "mx.test.example"
	g.Greylist.Enabled = true
	cfg.Guard = g
	cfg.Guard.Enabled = true
	cfg.Policy.Enabled = true
	cfg.Policy.Hostname = "mx.test.example"
	cfg.Policy.Listen = "unix:" + filepath.Join(t.TempDir(), "policy.sock")
	cfg.Policy.Owner, cfg.Policy.Group, cfg.Policy.Mode = "", "", "" // the test's user asks
	cfg.Policy.Greylist.Enabled = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	td := startDaemonWith(t, cfg, Options{})
	d := td.d
	if d.sharedGrey == nil {
		t.Fatal("guard and policy do not share one greylist store")
	}
	c, err := net.Dial("unix", cfg.Policy.Listen[len("unix:"):])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	ask := func(attrs string) string {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.9\n" + attrs + "\n"))
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("no reply: %v\n%s", err, td.logs)
		}
		br.ReadString('\n')
		return strings.TrimSpace(line)
	}
	before := d.pipe.Stats().Events
	if a := ask("helo_name=localhost\nsender=a@remote.example\nrecipient=b@example.com\n"); a != "action=REJECT mxguard: HELO name <localhost> denied" {
		t.Fatalf("HELO: %q", a)
	}
	if a := ask("helo_name=mta.remote.example\nsender=a@remote.example\nrecipient=b@example.com\n"); !strings.HasPrefix(a, "action=DEFER_IF_PERMIT mxguard: Greylisted") {
		t.Fatalf("greylist: %q", a)
	}
	if st, err := d.Status(); err != nil || st.Policy == nil || st.Policy.Requests != 2 || st.Policy.Helo != 1 {
		t.Errorf("status: %+v %v", st.Policy, err)
	}
	waitFor(t, "the policy's events in the pipeline", 5*time.Second, func() bool {
		return d.pipe.Stats().Events >= before+2
	}, td.logs)
}

// The two greylist sections must agree when they share the store.
func TestPolicyGreylistMustMatchGuard(t *testing.T) {
	cfg := config.Default()
	cfg.Guard.Hostname, cfg.Policy.Hostname = "mx.test.example", "mx.test.example"
	cfg.Guard.Greylist.Enabled, cfg.Policy.Greylist.Enabled = true, true
	cfg.Policy.Greylist.Delay = smtpguard.Duration(time.Minute)
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "policy.greylist.delay") {
		t.Fatalf("Validate: %v, want policy.greylist.delay named", err)
	}
	cfg.Policy.Greylist.DB = "/elsewhere/greylist.db" // its own store: fine
	if err := cfg.Validate(); err != nil {
		t.Fatalf("own db: %v", err)
	}
}

// Guard and policy share one resolver (one cache) only when both would
// build the same one; a policy.resolver or policy.dnsbl.cache_ttl of its
// own is not ignored.
func TestPolicyResolverSharedOnlyWhenEqual(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(g *smtpguard.Config, p *policy.Config)
		shared bool
	}{
		{"same defaults", func(*smtpguard.Config, *policy.Config) {}, true},
		{"policy resolver unset: the guard's", func(g *smtpguard.Config, _ *policy.Config) { g.Resolver = "127.0.0.1:5353" }, true},
		{"same resolver named twice", func(g *smtpguard.Config, p *policy.Config) {
			g.Resolver, p.Resolver = "127.0.0.1:5353", "127.0.0.1:5353"
		}, true},
		{"own policy.resolver", func(g *smtpguard.Config, p *policy.Config) {
			g.Resolver, p.Resolver = "127.0.0.1:5353", "127.0.0.1:5354"
		}, false},
		{"own policy.dnsbl.cache_ttl", func(_ *smtpguard.Config, p *policy.Config) { p.DNSBL.CacheTTL = policy.Duration(time.Minute) }, false},
		{"own policy.dnsbl.timeout", func(_ *smtpguard.Config, p *policy.Config) { p.DNSBL.Timeout = policy.Duration(time.Second) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := smtpguard.DefaultConfig()
			g.DNSBL.Sites = []string{"zen.example"}
			p := policy.DefaultConfig()
			p.DNSBL.Sites = []string{"zen.example"}
			tc.mod(&g, &p)
			d := &Daemon{guardCfg: &g, policyCfg: &p}
			_, res, err := d.sharedFrontDoorDeps()
			if err != nil {
				t.Fatal(err)
			}
			if (res != nil) != tc.shared {
				t.Fatalf("shared resolver: %v, want %v", res != nil, tc.shared)
			}
		})
	}
}
