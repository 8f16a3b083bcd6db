package dnsbl

import (
	"bytes"
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
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
)

// lockedBuffer is a log sink the publisher's goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freePort returns a loopback port free for UDP and TCP a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// TestKnotSecondary runs a real Knot DNS as a secondary of the zone on
// loopback high ports: it transfers the zone with TSIG, follows bans,
// unbans and expiry through NOTIFY and IXFR, and answers DNSBL queries as
// the primary does; transfers without the right key are refused.
// knotSecondary is a real Knot DNS (knotd) on a loopback high port,
// following a Publisher's zone as its secondary through NOTIFY, AXFR and
// IXFR with TSIG, and the ways a test asks it.
type knotSecondary struct {
	t        *testing.T
	p        *Publisher
	logs     *lockedBuffer // the publisher's log
	ask      func(name string, qtype uint16) *dns.Msg
	aOf      func(ip string) string // the A record Knot answers for ip, or the rcode / NODATA / no answer
	wait     func(what string, cond func() bool)
	serialAt func() uint32 // Knot's serial of the zone
}

// startKnotSecondary starts a publisher (seeded by seed before Knot's
// first transfer) and a knotd following it; it skips without root or
// knotd, and waits until Knot has loaded the zone.
func startKnotSecondary(t *testing.T, seed func(p *Publisher)) *knotSecondary {
	t.Helper()
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
	seed(p)

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
	k := &knotSecondary{t: t, p: p, logs: logs}
	k.ask = func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		c := &dns.Client{Timeout: 500 * time.Millisecond}
		r, _, err := c.Exchange(m, secondary)
		if err != nil {
			return nil
		}
		return r
	}
	k.aOf = func(ip string) string {
		r := k.ask(queryName(netip.MustParseAddr(ip), p.zone), dns.TypeA)
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
	k.wait = func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	k.serialAt = func() uint32 {
		if r := k.ask(p.zone, dns.TypeSOA); r != nil && len(r.Answer) == 1 {
			return r.Answer[0].(*dns.SOA).Serial
		}
		return 0
	}
	k.wait("Knot to load the zone", func() bool { return k.serialAt() == p.Serial() })
	return k
}

func TestKnotSecondary(t *testing.T) {
	k := startKnotSecondary(t, func(p *Publisher) {
		p.Apply(context.Background(), mkBan("198.51.100.0/24", "manual", time.Now().Add(time.Hour)))
	})
	p, logs, ask, aOf, wait := k.p, k.logs, k.ask, k.aOf, k.wait
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	start := time.Now()
	for ip, want := range map[string]string{"198.51.100.77": "127.0.0.10", "127.0.0.2": "127.0.0.2", "127.0.0.1": "NXDOMAIN", "192.0.2.7": "NXDOMAIN"} {
		if got := aOf(ip); got != want {
			t.Errorf("after the first transfer Knot answers %s for %s, want %s", got, ip, want)
		}
	}
	if got := ask(queryName(netip.MustParseAddr("::2"), p.zone), dns.TypeA); got == nil || len(got.Answer) != 1 {
		t.Errorf("Knot does not list the IPv6 test entry ::2: %v", got)
	}

	// A ban: NOTIFY, then an IXFR.
	banned := time.Now()
	p.Apply(ctx, mkBan("192.0.2.7/32", "dictionary", until))
	wait("the ban at Knot", func() bool { return aOf("192.0.2.7") == "127.0.0.2" })
	t.Logf("a ban answered by Knot %s after it was made (notify_delay %s)", time.Since(banned).Round(time.Millisecond), p.cfg.NotifyDelay)
	p.Apply(ctx, mkBan("198.51.100.9/32", "sasl_bruteforce", until))
	// Nested IPv6: the names between the /48's wildcard and the /128
	// exist, so they carry wildcards of their own (RFC 4592).
	p.Apply(ctx, mkBan("2001:db8:7::/48", "manual", until))
	p.Apply(ctx, mkBan("2001:db8:7:1:2:3:4:5/128", "sasl_bruteforce", until))
	wait("the IPv6 bans at Knot", func() bool { return aOf("2001:db8:7:1:2:3:4:5") == "127.0.0.4" })
	for ip, want := range map[string]string{"198.51.100.9": "127.0.0.4", "198.51.100.10": "127.0.0.10",
		"2001:db8:7:1:3::1": "127.0.0.10", "2001:db8:7:1:2:3:4:6": "127.0.0.10", "2001:db8:7::1": "127.0.0.10",
		"2001:db8:8::1": "NXDOMAIN"} {
		if got := aOf(ip); got != want {
			t.Errorf("Knot answers %s for %s, want %s (nested bans)", got, ip, want)
		}
	}
	if !strings.Contains(logs.String(), "kind=IXFR") {
		t.Errorf("Knot did not follow the change by IXFR:\n%s", logs)
	}
	r := ask(queryName(netip.MustParseAddr("192.0.2.7"), p.zone), dns.TypeTXT)
	if r == nil || len(r.Answer) != 1 || !strings.HasPrefix(strings.Join(r.Answer[0].(*dns.TXT).Txt, ""), "dictionary: 5 unknown recipients within 10m0s; until ") {
		t.Errorf("TXT at Knot: %v", r)
	}

	// An unban and an expiry.
	p.Revoke(ctx, netip.MustParsePrefix("192.0.2.7/32"))
	p.Apply(ctx, ban.Ban{Prefix: netip.MustParsePrefix("203.0.113.5/32"), Detector: "pregreet", Reason: "talked first",
		Until: time.Now().Add(1500 * time.Millisecond)})
	wait("the short ban at Knot", func() bool { return aOf("203.0.113.5") == "127.0.0.3" })
	if got := aOf("192.0.2.7"); got != "NXDOMAIN" {
		t.Errorf("unbanned address at Knot: %s", got)
	}
	wait("the expiry at Knot", func() bool { return aOf("203.0.113.5") == "NXDOMAIN" })
	t.Logf("ban, unban and expiry followed by Knot in %s", time.Since(start).Round(time.Millisecond))

	// Transfers without the right key are refused (by the primary).
	for _, tc := range []struct {
		name   string
		secret map[string]string
		sign   bool
	}{
		{"no TSIG", nil, false},
		{"wrong secret", map[string]string{"xfr-key.": "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc="}, true},
		{"unknown key", map[string]string{"other-key.": testSecret}, true},
	} {
		m := new(dns.Msg)
		m.SetAxfr(p.zone)
		if tc.sign {
			for name := range tc.secret {
				m.SetTsig(name, dns.HmacSHA256, 300, time.Now().Unix())
			}
		}
		tr := &dns.Transfer{TsigSecret: tc.secret}
		ch, err := tr.In(m, p.Addr())
		if err == nil {
			for env := range ch {
				if env.Error == nil && len(env.RR) > 0 {
					t.Errorf("%s: the primary sent %d records", tc.name, len(env.RR))
				}
				err = env.Error
			}
		}
		if err == nil {
			t.Errorf("%s: transfer not refused", tc.name)
		}
	}
}
