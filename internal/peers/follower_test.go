package peers

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/tsig"
)

const zoneV1Until = "2099-01-01T00:00:00Z"

var zoneV1 = []string{
	`7.113.0.203 60 IN A 127.0.0.2`,
	`7.113.0.203 60 IN TXT "dictionary: 5 unknown recipients in 10m; until ` + zoneV1Until + `"`,
	`*.100.51.198 60 IN A 127.0.0.3`,
	`*.100.51.198 60 IN TXT "manual: spam run; until 2026-01-02T03:04:05Z"`, // over before the test's now
	`5.2.0.192 60 IN A 127.0.0.2`,                                           // allowlisted here
	`2.0.0.127 60 IN A 127.0.0.2`,                                           // RFC 5782 test entry
	`2.0.0.127 60 IN TXT "test"`,                                            //
	`bogus 60 IN A 127.0.0.2`,                                               // garbage
	`*.10 60 IN A 127.0.0.2`,                                                // a /8: too broad
	`8.113.0.203 60 IN TXT "no A"`,                                          // no listing
	`9.113.0.203 60 IN A 192.0.2.1`,                                         // an A outside 127/8
}

func newTestManager(t testing.TB) *ban.Manager {
	t.Helper()
	m, err := ban.NewManager(ban.ManagerConfig{Allowlist: []string{"192.0.2.5"},
		AllowSources: []func() ([]netip.Prefix, error){}}, store.NewMemory(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func peerConfig(primary string) Config {
	return Config{Name: "mx2", Zone: "bl.mx2.example.org", Primary: primary,
		TSIG:   tsig.Key{Name: testKeyName, Algorithm: "hmac-sha256", Secret: testSecret},
		MaxBan: duration.Duration(24 * time.Hour), Refresh: duration.Duration(time.Hour)}
}

// bans maps each prefix in force to its detector and reason.
func bans(t testing.TB, m *ban.Manager) map[string]string {
	t.Helper()
	list, err := m.List(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range list {
		out[b.Prefix.String()] = b.Detector + " " + b.Reason
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sendNotify(t *testing.T, from, to, zone, key, secret string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetNotify(zone)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if key != "" {
		m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
		c.TsigSecret = map[string]string{key: secret}
	}
	if from != "" {
		c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}
	}
	r, _, err := c.Exchange(m, to)
	if err != nil && r == nil {
		t.Fatalf("NOTIFY to %s: %v", to, err)
	}
	return r
}

func TestFollowerAXFRThenNotifyIXFRAndFallbacks(t *testing.T) {
	p := startPrimary(t, "bl.mx2.example.org.", zoneV1...)
	mgr := newTestManager(t)
	cfg := peerConfig(p.addr)
	cfg.NotifyListen = "127.0.0.1:0"
	set := NewSet([]Config{cfg}, "", mgr, nil)
	if err := set.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	notifyAddr := set.notifiers[0].Addr().String()
	status := func() Status { return set.Status()[0] }

	waitFor(t, "the first transfer", func() bool { return status().Serial == 1 && status().Entries > 0 })
	st := status()
	want := map[string]string{"203.0.113.7/32": "peer:mx2 dictionary: 5 unknown recipients in 10m"}
	if got := bans(t, mgr); !mapsEqual(got, want) {
		t.Fatalf("after AXFR: %v, want %v", got, want)
	}
	wantSkipped := map[string]int{SkipTest: 1, SkipGarbage: 1, SkipAllowlist: 1, SkipTooBroad: 1, SkipNoA: 2, SkipOver: 1}
	if !mapsEqual(st.Skipped, wantSkipped) || st.LastKind != "axfr" || st.Entries != 1 {
		t.Fatalf("status %+v; want skipped %v after an axfr", st, wantSkipped)
	}
	b, _ := mgr.Lookup(netip.MustParseAddr("203.0.113.7"), time.Now())
	if limit := time.Now().Add(24 * time.Hour); b.Until.After(limit) || b.Until.Before(limit.Add(-time.Minute)) {
		t.Fatalf("until %s: want the peer's 2099 capped to max_ban (24h)", b.Until)
	}

	// A change and a signed NOTIFY: an IXFR brings it.
	v2 := append(slices.Clone(zoneV1[2:]), `9.113.0.203 60 IN A 127.0.0.2`) // .7 removed
	v2 = slices.DeleteFunc(v2, func(s string) bool { return strings.Contains(s, "192.0.2.1") })
	p.set(2, v2...)
	if r := sendNotify(t, "", notifyAddr, "bl.mx2.example.org.", testKeyName, testSecret); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("signed NOTIFY answered %s", dns.RcodeToString[r.Rcode])
	}
	waitFor(t, "serial 2", func() bool { return status().Serial == 2 })
	if st := status(); st.LastKind != "ixfr" {
		t.Fatalf("serial 2 came by %q, want ixfr (primary saw %v)", st.LastKind, p.log())
	}
	// the status shows the serial before the Manager has the listings
	want = map[string]string{"203.0.113.9/32": "peer:mx2 listed by mx2 (127.0.0.2)"}
	waitFor(t, "the IXFR's listings", func() bool { return mapsEqual(bans(t, mgr), want) })

	// The primary answers the IXFR with the whole zone.
	p.setMode("full")
	p.set(3, append(slices.Clone(v2), `10.113.0.203 60 IN A 127.0.0.2`)...)
	sendNotify(t, "", notifyAddr, "bl.mx2.example.org.", testKeyName, testSecret)
	waitFor(t, "serial 3", func() bool { return status().Serial == 3 })
	if st := status(); st.LastKind != "axfr-style ixfr" {
		t.Fatalf("serial 3 came by %q", st.LastKind)
	}
	// The primary refuses IXFR: the follower falls back to AXFR.
	p.setMode("refuse")
	p.set(4, v2...)
	sendNotify(t, "", notifyAddr, "bl.mx2.example.org.", testKeyName, testSecret)
	waitFor(t, "serial 4", func() bool { return status().Serial == 4 })
	if st := status(); st.LastKind != "axfr after ixfr" {
		t.Fatalf("serial 4 came by %q", st.LastKind)
	}
	waitFor(t, "the fallback AXFR's listings", func() bool {
		got := bans(t, mgr)
		return len(got) == 1 && got["203.0.113.9/32"] != ""
	})
	wantLog := []string{"AXFR 1", "SOA 2", "IXFR 1", "SOA 3", "IXFR 2", "SOA 4", "IXFR 3", "AXFR 4"}
	if got := p.log(); !slices.Equal(got, wantLog) {
		t.Fatalf("the primary saw %v, want %v", got, wantLog)
	}

	// NOTIFYs that must not count: unsigned with a key configured, a wrong
	// key, another sender, another zone.
	before := status().Notifies
	if r := sendNotify(t, "", notifyAddr, "bl.mx2.example.org.", "", ""); r.Rcode != dns.RcodeRefused {
		t.Fatalf("unsigned NOTIFY from the primary answered %s, want REFUSED (the zone has a key)", dns.RcodeToString[r.Rcode])
	}
	if r := sendNotify(t, "", notifyAddr, "bl.mx2.example.org.", testKeyName, "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc="); r.Rcode != dns.RcodeNotAuth {
		t.Fatalf("NOTIFY with a wrong key answered %s", dns.RcodeToString[r.Rcode])
	}
	if r := sendNotify(t, "127.0.0.2", notifyAddr, "bl.mx2.example.org.", testKeyName, testSecret); r.Rcode != dns.RcodeRefused {
		t.Fatalf("NOTIFY from another address answered %s", dns.RcodeToString[r.Rcode])
	}
	if r := sendNotify(t, "", notifyAddr, "bl.other.example.", "", ""); r.Rcode != dns.RcodeNotAuth {
		t.Fatalf("NOTIFY for another zone answered %s", dns.RcodeToString[r.Rcode])
	}
	if got := status().Notifies; got != before || set.NotifyRefused() != 4 {
		t.Fatalf("notifies %d → %d, refused %d; want none taken, 4 refused", before, got, set.NotifyRefused())
	}
}

func TestFollowerPollsWithoutNotify(t *testing.T) {
	p := startPrimary(t, "bl.mx2.example.org.", `7.113.0.203 60 IN A 127.0.0.2`)
	mgr := newTestManager(t)
	cfg := peerConfig(p.addr)
	cfg.Refresh = duration.Duration(50 * time.Millisecond) // below what the config allows, for the test
	f := NewFollower(cfg, mgr, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the first transfer", func() bool { return len(bans(t, mgr)) == 1 })
	p.set(2)
	waitFor(t, "the removal by polling", func() bool { return len(bans(t, mgr)) == 0 })
	if st := f.Status(); st.Serial != 2 || st.LastKind != "ixfr" {
		t.Fatalf("status %+v", st)
	}
	// Unchanged, the zone is checked with its SOA only, and the mirrored
	// bans are refreshed all the same (LastCheck moves).
	n := len(p.log())
	last := f.Status().LastCheck
	waitFor(t, "two more polls", func() bool { return len(p.log()) >= n+2 && f.Status().LastCheck.After(last) })
	for _, q := range p.log()[n:] {
		if q != "SOA 2" {
			t.Fatalf("an unchanged zone was asked for with %q (all: %v)", q, p.log())
		}
	}
}

func TestFollowerRefusesWrongKeyAndTooManyEntries(t *testing.T) {
	p := startPrimary(t, "bl.mx2.example.org.", `7.113.0.203 60 IN A 127.0.0.2`, `8.113.0.203 60 IN A 127.0.0.2`)
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"wrong secret", func(c *Config) { c.TSIG.Secret = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=" }, "signature"},
		{"unknown key", func(c *Config) { c.TSIG.Name = "other-key." }, "signature"},
		{"more names than max_entries", func(c *Config) { c.MaxEntries = 1 }, "max_entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mgr := newTestManager(t)
			cfg := peerConfig(p.addr)
			tc.edit(&cfg)
			f := NewFollower(cfg, mgr, nil, nil)
			f.Check(context.Background())
			st := f.Status()
			if !strings.Contains(st.LastError, tc.wantErr) || st.HaveZone || st.Failures != 1 {
				t.Fatalf("status %+v; want a failure mentioning %q", st, tc.wantErr)
			}
			if got := bans(t, mgr); len(got) != 0 {
				t.Fatalf("banned %v", got)
			}
		})
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The zone kept in state_dir brings the peer's bans back at start while
// the primary is down, with max_ban counted from the last contact; with
// the primary up, the first transfer is an IXFR from the saved serial.
func TestFollowerRestoresSavedZone(t *testing.T) {
	p := startPrimary(t, "bl.mx2.example.org.", zoneV1[:2]...)
	dir := t.TempDir()
	first := NewFollower(peerConfig(p.addr), newTestManager(t), nil, nil)
	first.SetStateDir(dir)
	first.Check(context.Background())
	path := filepath.Join(dir, "mx2.zone")
	if _, err := os.Stat(path); err != nil || first.Status().LastError != "" {
		t.Fatalf("after the first transfer: %v, status %+v", err, first.Status())
	}
	run := func(t *testing.T, f *Follower) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = f.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}

	t.Run("primary up: IXFR from the saved serial", func(t *testing.T) {
		p.set(2, append(slices.Clone(zoneV1[:2]), `9.113.0.203 60 IN A 127.0.0.2`)...)
		mgr := newTestManager(t)
		f := NewFollower(peerConfig(p.addr), mgr, nil, nil)
		f.SetStateDir(dir)
		n := len(p.log())
		run(t, f)
		waitFor(t, "serial 2", func() bool { return f.Status().Serial == 2 && len(bans(t, mgr)) == 2 })
		if got := p.log()[n:]; !slices.Equal(got, []string{"SOA 2", "IXFR 1"}) {
			t.Fatalf("the primary saw %v after the restart, want an IXFR from 1", got)
		}
	})

	t.Run("primary down: the saved bans, until the last contact + max_ban", func(t *testing.T) {
		_ = p.srv.Shutdown()
		lastContact := time.Now().Add(-23 * time.Hour)
		if err := os.Chtimes(path, lastContact, lastContact); err != nil {
			t.Fatal(err)
		}
		mgr := newTestManager(t)
		f := NewFollower(peerConfig(p.addr), mgr, nil, nil)
		f.SetStateDir(dir)
		run(t, f)
		waitFor(t, "the saved bans", func() bool { return len(bans(t, mgr)) == 2 && f.Status().Failures > 0 })
		b, _ := mgr.Lookup(netip.MustParseAddr("203.0.113.7"), time.Now())
		if want := lastContact.Add(24 * time.Hour); b.Until.Sub(want).Abs() > time.Second {
			t.Fatalf("until %s, want the last contact + max_ban (%s)", b.Until, want)
		}
		if st := f.Status(); st.LastKind != "saved" || st.Serial != 2 {
			t.Fatalf("status %+v", st)
		}
	})

	t.Run("saved longer ago than max_ban: nothing", func(t *testing.T) {
		old := time.Now().Add(-25 * time.Hour)
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
		mgr := newTestManager(t)
		f := NewFollower(peerConfig(p.addr), mgr, nil, nil)
		f.SetStateDir(dir)
		f.restore(context.Background())
		if got := bans(t, mgr); len(got) != 0 || f.Status().HaveZone {
			t.Fatalf("banned %v from a zone saved 25h ago", got)
		}
	})
}

// Peers may share one notify_listen: a NOTIFY wakes the follower of its
// zone only.
func TestSharedNotifyListen(t *testing.T) {
	p2 := startPrimary(t, "bl.mx2.example.org.", `7.113.0.203 60 IN A 127.0.0.2`)
	p3 := startPrimary(t, "bl.mx3.example.org.", `8.113.0.203 60 IN A 127.0.0.2`)
	mgr := newTestManager(t)
	c2, c3 := peerConfig(p2.addr), peerConfig(p3.addr)
	c3.Name, c3.Zone = "mx3", "bl.mx3.example.org"
	c2.NotifyListen, c3.NotifyListen = "127.0.0.1:0", "127.0.0.1:0"
	set := NewSet([]Config{c2, c3}, "", mgr, nil)
	if len(set.notifiers) != 1 {
		t.Fatalf("%d NOTIFY listeners for one address", len(set.notifiers))
	}
	if err := set.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	addr := set.notifiers[0].Addr().String()
	waitFor(t, "both zones", func() bool { return len(bans(t, mgr)) == 2 })
	p3.set(2, `9.113.0.203 60 IN A 127.0.0.2`)
	sendNotify(t, "", addr, "bl.mx3.example.org.", testKeyName, testSecret)
	waitFor(t, "mx3's serial 2", func() bool { return set.Status()[1].Serial == 2 })
	if st := set.Status(); st[0].Notifies != 0 || st[1].Notifies != 1 {
		t.Fatalf("notifies: mx2 %d, mx3 %d; want 0 and 1", st[0].Notifies, st[1].Notifies)
	}
	if got := bans(t, mgr); got["203.0.113.9/32"] != "peer:mx3 listed by mx3 (127.0.0.2)" || got["203.0.113.7/32"] == "" || len(got) != 2 {
		t.Fatalf("bans %v", got)
	}
}
