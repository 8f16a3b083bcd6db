package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/dnsbl"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/tsig"
)

// A fleet of two: mx1 publishes its bans (actions/dnsbl), mx2 follows
// mx1's zone (internal/peers) through NOTIFY and IXFR with TSIG. Every
// kind of ban arrives as it was banned — an address, a /16 with a /32
// inside it (the wildcard the publisher adds between them is no ban of
// its own), a /23 (as the two /24s the zone can say), IPv6 — and mx1's
// unban of the /16 lifts exactly that on mx2.
func TestFleetPublisherToFollower(t *testing.T) {
	td1, td2 := startFleet(t)
	for _, ip := range []string{"203.0.113.7", "198.51.0.0/16", "198.51.100.9", "2001:db8:1::/48", "2001:db8::7", "192.0.2.0/23"} {
		if err := call(t, td1.sock, control.Request{Cmd: control.CmdBan, IP: ip, For: "2h", Reason: "by hand " + ip}, nil); err != nil {
			t.Fatal(err)
		}
	}
	mirrored := func() []string {
		var out []string
		for _, b := range list(t, td2.sock) {
			out = append(out, b.Prefix.String()+" "+b.Detector+" "+b.Reason)
		}
		slices.Sort(out)
		return out
	}
	want := []string{
		"192.0.2.0/24 peer:mx1 manual: by hand [address]",
		"192.0.3.0/24 peer:mx1 manual: by hand [address]",
		"198.51.0.0/16 peer:mx1 manual: by hand [address]",
		"198.51.100.9/32 peer:mx1 manual: by hand [address]",
		"2001:db8:1::/48 peer:mx1 manual: by hand [address]",
		"2001:db8::7/128 peer:mx1 manual: by hand [address]",
		"203.0.113.7/32 peer:mx1 manual: by hand [address]",
	}
	waitFor(t, "mx2 to mirror mx1's bans", 10*time.Second, func() bool { return slices.Equal(mirrored(), want) }, td2.logs)
	if err := call(t, td1.sock, control.Request{Cmd: control.CmdUnban, IP: "198.51.0.0/16"}, nil); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(s string) bool { return s[:13] == "198.51.0.0/16" })
	waitFor(t, "mx2 to lift the /16", 10*time.Second, func() bool { return slices.Equal(mirrored(), want) }, td2.logs)
	var st Status
	if err := call(t, td2.sock, control.Request{Cmd: control.CmdStatus}, &st); err != nil {
		t.Fatal(err)
	}
	if p := st.Peers[0]; p.LastKind != "ixfr" || p.Skipped[peers.SkipTest] != 2 || p.Notifies == 0 {
		t.Fatalf("mx2's view of mx1: %+v; want IXFRs after NOTIFYs and the two test entries skipped", p)
	}
}

// startFleet starts mx1, publishing its bans as bl.mx1.test, and mx2,
// following that zone through NOTIFY and IXFR with TSIG.
func startFleet(t testing.TB) (mx1d, mx2d *testDaemon) {
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="
	mx1Listen := freeAddr(t)
	mx2Notify := freeAddr(t)

	mx1 := newTestConfig(t)
	mx1.Ban.MaxPrefixV4 = 16
	mx1.Publish.DNSBL.Enabled = true
	mx1.Publish.DNSBL.Zone = "bl.mx1.test"
	mx1.Publish.DNSBL.Listen = mx1Listen
	mx1.Publish.DNSBL.Secondaries = []string{mx2Notify}
	mx1.Publish.DNSBL.TSIG = tsig.Key{Name: "mx1-to-mx2", Algorithm: "hmac-sha256", Secret: secret}
	mx1.Publish.DNSBL.NotifyDelay = dnsbl.Duration(10 * time.Millisecond)
	if err := mx1.Validate(); err != nil {
		t.Fatal(err)
	}
	mx1d = startDaemonWith(t, mx1, Options{})

	mx2 := newTestConfig(t)
	mx2.Ban.MaxPrefixV4 = 16
	mx2.Peers = []peers.Config{{Name: "mx1", Zone: "bl.mx1.test", Primary: mx1Listen, NotifyListen: mx2Notify,
		TSIG: tsig.Key{Name: "mx1-to-mx2", Algorithm: "hmac-sha256", Secret: secret}, Refresh: duration.Duration(time.Hour)}}
	if err := mx2.Validate(); err != nil {
		t.Fatal(err)
	}
	mx2d = startDaemonWith(t, mx2, Options{})
	return mx1d, mx2d
}

// BenchmarkFleetBanToMirror measures a ban on mx1 (over its control
// socket, as `mxguard ban` does) until mx2 enforces it: mx1's zone change,
// its NOTIFY (notify_delay 10ms), mx2's SOA query and IXFR, and the mirror
// in mx2's ban index, from which its firewall backends are applied.
func BenchmarkFleetBanToMirror(b *testing.B) {
	td1, td2 := startFleet(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		a := netip.AddrFrom4([4]byte{203, 0, byte(113 + i/250%10), byte(1 + i%250)})
		start := time.Now()
		if err := call(b, td1.sock, control.Request{Cmd: control.CmdBan, IP: a.String(), For: "2h", Reason: "bench"}, nil); err != nil {
			b.Fatal(err)
		}
		for {
			if _, ok := td2.d.mgr.LookupEnforced(a, time.Now()); ok {
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatalf("%s not mirrored on mx2 after 10s\n%s", a, td2.logs)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
