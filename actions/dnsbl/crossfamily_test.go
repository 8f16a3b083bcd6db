package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// the names above an IPv6 listing that are also IPv4 prefix names
// (all labels single decimal digits) inside an IPv4 region must be NODATA,
// as in the transferred zone (they are empty non-terminals there), not
// NXDOMAIN. Only the 4-label case (v6Below) is handled.
func TestIPv6EmptyNonTerminalsAreNODATA(t *testing.T) {
	for _, v4 := range []int{24, 16} {
		t.Run(fmt.Sprint(v4), func(t *testing.T) { checkIPv6EmptyNonTerminals(t, v4) })
	}
}

func checkIPv6EmptyNonTerminals(t *testing.T, maxV4 int) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	p, err := New(xfrConfig(), Options{Now: ck.now, MaxPrefixV4: maxV4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Apply(context.Background(), mkBan("2001:db8::7/128", "dictionary", ck.t.Add(time.Hour)))
	// the transferred zone: every suffix of a listed owner name exists
	zone := records(xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeAXFR, 0, true, nil))
	exists := map[string]bool{}
	for _, rr := range zone {
		n := strings.ToLower(rr.Header().Name)
		for n != p.zone {
			exists[n] = true
			n = n[strings.IndexByte(n, '.')+1:]
		}
	}
	for _, name := range []string{"2.bl.example.", "0.2.bl.example.", "0.0.2.bl.example.", "1.0.0.2.bl.example."} {
		if !exists[name] {
			t.Fatalf("%s: not in the zone?", name)
		}
		if m := ask(t, p, name, dns.TypeA); m.Rcode != dns.RcodeSuccess {
			t.Errorf("%s exists in the transferred zone (empty non-terminal) but the server says %s", name, dns.RcodeToString[m.Rcode])
		}
	}
}

// an IPv4 /24 whose labels are single digits (2.6.0.0/24 is
// "*.0.6.2") is also the IPv6 nibble path 260::/12: under RFC 4592 a
// secondary answers every IPv6 address in 2600::/12 (ARIN) with the /24's
// A record, where the built-in server says NXDOMAIN.
func TestIPv4WildcardDoesNotListIPv6(t *testing.T) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	p, err := New(xfrConfig(), Options{Now: ck.now}) // defaults: /24 and /48 regions
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Apply(context.Background(), mkBan("2.6.0.0/24", "manual", ck.t.Add(time.Hour)))
	zone := records(xfr(t, p, tcpAddr("192.0.2.53"), dns.TypeAXFR, 0, true, nil))
	names := map[string]string{}
	for _, rr := range zone {
		if a, ok := rr.(*dns.A); ok {
			names[strings.ToLower(a.Hdr.Name)] = a.A.String()
		}
	}
	exists := func(n string) bool {
		for owner := range names {
			if owner == n || strings.HasSuffix(owner, "."+n) {
				return true
			}
		}
		return false
	}
	resolve := func(q string) string { // RFC 4592, as in TestRenderedZoneMatchesLookups
		if a, ok := names[q]; ok {
			return a
		}
		ce := q
		for ce != p.zone {
			ce = ce[strings.IndexByte(ce, '.')+1:]
			if ce == p.zone || exists(ce) {
				break
			}
		}
		return names["*."+ce]
	}
	for _, s := range []string{"2600:1f18::1", "2607:f8b0:4004:c1b::1a", "2.6.0.77"} {
		a := netip.MustParseAddr(s)
		want := ""
		if b, ok := p.index.Lookup(a, ck.t); ok {
			want = p.code(b.Detector).A.String()
		}
		if got := resolve(queryName(a, p.zone)); got != want {
			t.Errorf("%s: a secondary of the transferred zone answers %q, the server %q", s, got, want)
		}
	}
}

// after a restart with nothing to publish (the bans expired while
// down, or Recheck lifted them), the rbldnsd file of the last run is never
// rewritten and no NOTIFY goes out: rbldnsd keeps serving the old bans
// until the next change.
func TestStartRewritesStaleRbldnsdFile(t *testing.T) {
	cfg := testConfig()
	cfg.RbldnsdFile = filepath.Join(t.TempDir(), "fleet.rbl")
	stale := "$DATASET ip4trie @\n192.0.2.7 :127.0.0.2:dictionary: old; until 2026-01-01T00:00:00Z\n"
	if err := os.WriteFile(cfg.RbldnsdFile, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startTestServer(t, cfg)
	if err := p.Sync(context.Background(), nil); err != nil { // Restore's Sync: nothing active
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // 30 × notify_delay
	if b, _ := os.ReadFile(cfg.RbldnsdFile); string(b) == stale {
		t.Errorf("the rbldnsd file of the previous run is still there after start and Sync")
	}
}
