package dnsbl

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestKnotIPv4WildcardDoesNotAnswerIPv6 checks with a real secondary
// (knotd, RFC 4592 wildcards) that the /24 wildcard of 2.6.0.0/24, whose
// name is also the IPv6 nibble path of 2600::/12, answers no IPv6
// address, and that an IPv6 listing under 2607::/16 hides no IPv4 ban.
func TestKnotIPv4WildcardDoesNotAnswerIPv6(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the Knot secondary test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: the Knot secondary test runs as root (CI does); run it with scripts/mx test-root ./actions/dnsbl")
	}
	knotd, err := exec.LookPath("knotd")
	if err != nil {
		t.Skip("skipping: knotd not installed (apt-get install knot)")
	}
	logs := &lockedBuffer{}
	knotPort := freePort(t)
	cfg := xfrConfig()
	cfg.Secondaries = []string{fmt.Sprintf("127.0.0.1:%d", knotPort)}
	cfg.TTL = Duration(time.Second)
	cfg.SOA.Refresh = Duration(time.Hour) // only NOTIFY may bring changes quickly
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	p.Apply(ctx, mkBan("2.6.0.0/24", "manual", until))
	p.Apply(ctx, mkBan("2607:1::5/128", "manual", until)) // its path makes 7.0.6.2 exist

	dir := t.TempDir()
	primary := strings.Replace(p.Addr(), ":", "@", 1)
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
database:
    storage: "%[1]s"
log:
  - target: stderr
    any: info
key:
  - id: %[3]s
    algorithm: hmac-sha256
    secret: %[4]s
remote:
  - id: primary
    address: %[5]s
    key: %[3]s
acl:
  - id: notify_from_primary
    address: 127.0.0.1
    key: %[3]s
    action: notify
template:
  - id: default
    storage: "%[1]s"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: changes
zone:
  - domain: %[6]s
    master: primary
    acl: notify_from_primary
`, dir, knotPort, "xfr-key", testSecret, primary, cfg.Zone)
	confPath := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	knotLog := &lockedBuffer{}
	cmd := exec.Command(knotd, "-c", confPath)
	cmd.Stdout, cmd.Stderr = knotLog, knotLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() || os.Getenv("KNOT_TEST_LOG") != "" {
			t.Logf("knotd:\n%s\nmxguard:\n%s", knotLog, logs)
		}
	})
	secondary := net.JoinHostPort("127.0.0.1", strconv.Itoa(knotPort))
	ask := func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		c := &dns.Client{Timeout: 500 * time.Millisecond}
		r, _, err := c.Exchange(m, secondary)
		if err != nil {
			return nil
		}
		return r
	}
	aOf := func(ip string) string {
		r := ask(queryName(netip.MustParseAddr(ip), p.zone), dns.TypeA)
		switch {
		case r == nil:
			return "no answer"
		case r.Rcode != dns.RcodeSuccess:
			return dns.RcodeToString[r.Rcode]
		case len(r.Answer) == 0:
			return "NODATA"
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	serialAt := func() uint32 {
		if r := ask(p.zone, dns.TypeSOA); r != nil && len(r.Answer) == 1 {
			return r.Answer[0].(*dns.SOA).Serial
		}
		return 0
	}
	wait("Knot to load the zone", func() bool { return serialAt() == p.Serial() })
	for ip, want := range map[string]string{"2.6.0.77": "127.0.0.10", "2.6.0.7": "127.0.0.10", "2.6.0.9": "127.0.0.10",
		"2607:1::5": "127.0.0.10", "2600:1f18::1": "NXDOMAIN", "2607:f8b0:4004:c1b::1a": "NXDOMAIN", "260a::1": "NXDOMAIN"} {
		if got := aOf(ip); got != want {
			t.Errorf("Knot answers %s for %s, want %s (the server: listed=%v)", got, ip, want, func() bool { _, ok := p.index.Lookup(netip.MustParseAddr(ip), time.Now()); return ok }())
		}
	}
}
