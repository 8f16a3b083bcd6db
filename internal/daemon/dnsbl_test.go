package daemon

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/control"
)

// The daemon publishes its bans in the DNSBL zone it serves: a manual ban
// is listed with the manual code, an unban lists it no more, and the
// serial of a restarted daemon is above every serial before.
func TestDaemonPublishesDNSBL(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.Publish.DNSBL.Enabled = true
	cfg.Publish.DNSBL.Zone = "bl.test"
	cfg.Publish.DNSBL.Listen = "127.0.0.1:0"
	td := startDaemon(t, cfg, "")
	if td.d.dnsbl == nil {
		t.Fatal("publish.dnsbl enabled, no publisher")
	}
	query := func(td *testDaemon, name string) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, err := dns.Exchange(m, td.d.dnsbl.Addr())
		if err != nil {
			t.Fatalf("query %s: %v", name, err)
		}
		return r
	}
	const name = "7.113.0.203.bl.test."
	if r := query(td, name); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before the ban: %s", dns.RcodeToString[r.Rcode])
	}
	if err := call(t, td.sock, control.Request{Cmd: control.CmdBan, IP: "203.0.113.7", Reason: "by hand"}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ban in the zone", 5*time.Second, func() bool {
		r := query(td, name)
		return len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "127.0.0.10"
	}, td.logs)
	if err := call(t, td.sock, control.Request{Cmd: control.CmdUnban, IP: "203.0.113.7"}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unban in the zone", 5*time.Second, func() bool { return query(td, name).Rcode == dns.RcodeNameError }, td.logs)

	// status and the scrape show the publisher: its serial, its listings
	// (the two RFC 5782 test entries) and the queries above.
	var st Status
	if err := call(t, td.sock, control.Request{Cmd: control.CmdStatus}, &st); err != nil {
		t.Fatal(err)
	}
	if st.DNSBL == nil {
		t.Fatal("status has no dnsbl object")
	}
	if st.DNSBL.Serial != td.d.dnsbl.Serial() || st.DNSBL.Listings != 2 || st.DNSBL.Zone != "bl.test." {
		t.Errorf("status dnsbl: zone %q serial %d listings %d; want bl.test., %d, 2",
			st.DNSBL.Zone, st.DNSBL.Serial, st.DNSBL.Listings, td.d.dnsbl.Serial())
	}
	if st.DNSBL.Answers["NXDOMAIN"] < 2 || st.DNSBL.Answers["NOERROR"] < 1 {
		t.Errorf("status dnsbl answers %v: want at least 2 NXDOMAIN and 1 NOERROR", st.DNSBL.Answers)
	}
	if m := td.d.metrics(); m.DNSBL == nil || m.DNSBL.Serial != st.DNSBL.Serial || m.DNSBL.Listings != 2 {
		t.Errorf("scrape dnsbl: %+v", m.DNSBL)
	}
	before := td.d.dnsbl.Serial()
	td.stop(t)
	td2 := startDaemon(t, cfg, "")
	if after := td2.d.dnsbl.Serial(); int32(after-before) <= 0 {
		t.Errorf("serial %d after restart, %d before", after, before)
	}
}

// A dry run serves no zone: its bans are never published, and the real
// daemon may hold the port.
func TestDaemonDryRunServesNoDNSBL(t *testing.T) {
	cfg := newTestConfig(t)
	cfg.DryRun = true
	cfg.Publish.DNSBL.Enabled = true
	cfg.Publish.DNSBL.Zone = "bl.test"
	cfg.Publish.DNSBL.Listen = "127.0.0.1:0"
	td := startDaemon(t, cfg, "")
	if td.d.dnsbl != nil {
		t.Fatal("a dry run serves the DNSBL zone")
	}
	for _, a := range td.d.acts {
		if a.Name() == "dnsbl" {
			t.Fatal("a dry run has the dnsbl action")
		}
	}
}
