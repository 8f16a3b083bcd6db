package peers

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/duration"
)

// unsignedSOA answers every SOA query with the given serial, unsigned
// (an on-path forger, or a server at the primary's address that does
// not know the key).
type unsignedSOA struct{ serial uint32 }

func (u unsignedSOA) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	soa, _ := dns.NewRR("bl.mx2.example.org. 60 IN SOA ns1.example.org. hostmaster.example.org. 1 3600 600 86400 60")
	soa.(*dns.SOA).Serial = u.serial
	m.Answer = []dns.RR{soa}
	_ = w.WriteMsg(m) // no TSIG
}

// the SOA check takes an unsigned answer: it counts as contact
// with the primary (max_ban runs from it again, the saved zone is touched)
// although tsig is configured.
func TestUnsignedSOAIsNoContact(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: unsignedSOA{serial: 1}}
	go srv.ActivateAndServe()
	defer srv.Shutdown()

	mgr := newTestManager(t)
	f := NewFollower(peerConfig(ln.Addr().String()), mgr, nil, nil)
	z, err := fullZone(f.origin, append(zoneRRs(t, 1, zoneV1[:2]...), zoneRRs(t, 1)[0]), 100)
	if err != nil {
		t.Fatal(err)
	}
	f.z = z
	time.Sleep(50 * time.Millisecond)
	f.Check(context.Background())
	st := f.Status()
	if st.LastError == "" && !st.LastCheck.IsZero() {
		t.Errorf("an unsigned SOA answer was taken as contact with the primary: %+v (mirrored: %v)", st, bans(t, mgr))
	}
}

// A refresh of max_ban/2 or more is refused (the mirrored bans would
// lapse between polls); a zone's SOA refresh longer than max_ban is cut
// to a third of it.
func TestRefreshFromMaxBan(t *testing.T) {
	for _, tc := range []struct {
		name            string
		refresh, maxBan time.Duration
		soaRefresh      uint32 // seconds; 0: no zone yet
		wantErr         bool
		wantPoll        time.Duration
	}{
		{"refresh above max_ban", 6 * time.Hour, time.Hour, 0, true, 0},
		{"refresh at half max_ban", 30 * time.Minute, time.Hour, 0, true, 0},
		{"refresh below half max_ban", 20 * time.Minute, time.Hour, 0, false, 20 * time.Minute},
		{"default refresh above max_ban", 0, 30 * time.Minute, 0, false, 10 * time.Minute},
		{"SOA refresh above max_ban", 0, time.Hour, 6 * 3600, false, 20 * time.Minute},
		{"SOA refresh well below max_ban", 0, 24 * time.Hour, 3600, false, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := peerConfig("192.0.2.1:53")
			c.MaxBan = duration.Duration(tc.maxBan)
			c.Refresh = duration.Duration(tc.refresh)
			err := ValidateAll([]Config{c.WithDefaults()})
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), ".refresh:") {
					t.Fatalf("refresh %s with max_ban %s: got %v, want an error naming refresh", tc.refresh, tc.maxBan, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f := NewFollower(c, nil, nil, nil)
			if tc.soaRefresh > 0 {
				soa, _ := dns.NewRR("bl.mx2.example.org. 60 IN SOA ns1.example.org. hostmaster.example.org. 1 3600 600 86400 60")
				soa.(*dns.SOA).Refresh = tc.soaRefresh
				z, err := fullZone(f.origin, []dns.RR{soa, soa}, 100)
				if err != nil {
					t.Fatal(err)
				}
				f.z = z
			}
			if got := f.refreshLocked(); got != tc.wantPoll {
				t.Errorf("polls every %s, want %s", got, tc.wantPoll)
			}
		})
	}
}

type unsignedAXFR struct{}

func (unsignedAXFR) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	soa, _ := dns.NewRR("bl.mx2.example.org. 60 IN SOA ns1.example.org. hostmaster.example.org. 5 3600 600 86400 60")
	a, _ := dns.NewRR("7.113.0.203.bl.mx2.example.org. 60 IN A 127.0.0.2")
	m := new(dns.Msg)
	m.SetReply(req)
	m.Answer = []dns.RR{soa, a, soa}
	_ = w.WriteMsg(m)
}

// an unsigned AXFR is refused (dns.Transfer verifies every message).
func TestUnsignedAXFRRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: unsignedAXFR{}}
	go srv.ActivateAndServe()
	defer srv.Shutdown()
	mgr := newTestManager(t)
	f := NewFollower(peerConfig(ln.Addr().String()), mgr, nil, nil)
	time.Sleep(50 * time.Millisecond)
	f.Check(context.Background())
	if st := f.Status(); st.HaveZone {
		t.Errorf("unsigned AXFR taken: %+v", st)
	} else {
		t.Logf("refused: %s", st.LastError)
	}
}
