package dnsbl

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The placeholder names served follow the changes of their region: the
// set rendered for the region is dropped when a listing in it changes.
func TestPlaceholderNamesFollowChanges(t *testing.T) {
	ck := &clock{time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	p := newTestPublisher(t, testConfig(), ck)
	ctx := context.Background()
	isPlaceholder := func(name string) bool {
		m := ask(t, p, name+"."+p.zone, dns.TypeTXT)
		for _, rr := range m.Answer {
			if txt, ok := rr.(*dns.TXT); ok && len(txt.Txt) == 1 && txt.Txt[0] == placeholderText {
				return true
			}
		}
		return false
	}
	steps := []struct {
		name   string
		change func() error
		want   map[string]bool
	}{
		{"no listing", func() error { return nil },
			map[string]bool{"_.a.4.0.3": false, "_.a.6.0.3": false}},
		{"a /22 with wildcards", func() error { return p.Apply(ctx, mkBan("3.0.4.0/22", "manual", ck.t.Add(time.Hour))) },
			map[string]bool{"_.a.4.0.3": true, "_.f.6.0.3": true, "_.a.8.0.3": false}},
		{"lifted", func() error { return p.Revoke(ctx, netip.MustParsePrefix("3.0.4.0/22")) },
			map[string]bool{"_.a.4.0.3": false, "_.f.6.0.3": false}},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for name, want := range st.want {
			if got := isPlaceholder(name); got != want {
				t.Errorf("%s: %s is a placeholder = %v, want %v", st.name, name, got, want)
			}
		}
	}
}

// BenchmarkPlaceholderQuery is a query of a placeholder name in a region
// of many listings.
func BenchmarkPlaceholderQuery(b *testing.B) {
	cfg := xfrConfig()
	cfg.RateLimit.QPS = 0
	p := newTestPublisher(b, cfg, &clock{time.Now()}) // regions are /16s
	until := time.Now().Add(time.Hour)
	ctx := context.Background()
	if err := p.Apply(ctx, mkBan("3.0.4.0/22", "manual", until)); err != nil {
		b.Fatal(err)
	}
	for i := range 4000 {
		if err := p.Apply(ctx, mkBan(netip.AddrFrom4([4]byte{3, 0, byte(16 + i/250), byte(1 + i%250)}).String()+"/32", "dictionary", until)); err != nil {
			b.Fatal(err)
		}
	}
	name := "_.a.4.0.3." + p.zone
	if m := ask(b, p, name, dns.TypeTXT); len(m.Answer) != 1 {
		b.Fatalf("%s: %v, want the placeholder TXT", name, m)
	}
	w := &discardWriter{recorder{remote: udpAddr("192.0.2.1")}}
	b.ReportAllocs()
	for b.Loop() {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		p.ServeDNS(w, m)
	}
}
