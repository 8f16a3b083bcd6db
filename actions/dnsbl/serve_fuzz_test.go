package dnsbl

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzServeDNS hands the server any packet that unpacks as a DNS message
// (malformed names, odd classes and types, EDNS edge cases, transfer
// requests, NOTIFYs, several questions or none), over UDP and over TCP,
// from a secondary and from anyone: it never panics, answers at most once
// for a non-transfer, and every answer packs.
func FuzzServeDNS(f *testing.F) {
	ck := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	p := newTestPublisher(f, xfrConfig(), ck)
	ctx := context.Background()
	until := ck.t.Add(time.Hour)
	for _, b := range []string{"192.0.2.7/32", "198.51.0.0/16", "2.6.0.0/24", "2001:db8:7::/48", "2001:db8:7:1:2:3:4:5/128"} {
		p.Apply(ctx, mkBan(b, "dictionary", until))
	}
	seed := func(name string, qtype uint16, edns bool) {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		if edns {
			m.SetEdns0(4096, true)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false, false)
		f.Add(b, true, true)
	}
	seed("7.2.0.192.bl.example.", dns.TypeA, false)
	seed("7.0.6.2.bl.example.", dns.TypeTXT, true)
	seed("_.a.0.6.2.bl.example.", dns.TypeANY, true)
	seed("bl.example.", dns.TypeAXFR, false)
	seed("bl.example.", dns.TypeIXFR, false)
	seed("bl.example.", dns.TypeSOA, true)
	seed("example.org.", dns.TypeA, false)
	f.Fuzz(func(t *testing.T, pkt []byte, tcp, fromSecondary bool) {
		m := new(dns.Msg)
		if m.Unpack(pkt) != nil {
			return
		}
		w := &recorder{remote: udpAddr("198.51.100.1")}
		switch {
		case tcp && fromSecondary:
			w.remote = tcpAddr("192.0.2.53")
		case tcp:
			w.remote = tcpAddr("198.51.100.1")
		case fromSecondary:
			w.remote = udpAddr("192.0.2.53")
		}
		p.ServeDNS(w, m)
		isXfr := len(m.Question) == 1 && (m.Question[0].Qtype == dns.TypeAXFR || m.Question[0].Qtype == dns.TypeIXFR)
		if !isXfr && len(w.msgs) > 1 {
			t.Fatalf("%d answers to one query", len(w.msgs))
		}
		for _, r := range w.msgs {
			if _, err := r.Pack(); err != nil {
				t.Fatalf("answer does not pack: %v\n%s", err, r)
			}
		}
	})
}
