package peers

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func zoneRRs(t *testing.T, serial uint32, records ...string) []dns.RR {
	t.Helper()
	soa := fmt.Sprintf("@ 60 IN SOA ns1.example.org. hostmaster.example.org. %d 3600 600 86400 60", serial)
	var out []dns.RR
	for _, s := range append([]string{soa}, records...) {
		rr, err := dns.NewRR("$ORIGIN " + testZone + "\n" + s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		out = append(out, rr)
	}
	return out
}

func listed(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s %d %s|%s", e.Prefix, e.Code, e.Detector, e.Reason))
	}
	slices.Sort(out)
	return out
}

// The wildcards a publisher puts at the names between a broader listing
// and a longer one below it repeat the broader one: no bans of their own.
func TestEntriesDropRepeatedWildcards(t *testing.T) {
	rrs := zoneRRs(t, 1,
		`*.2.1 IN A 127.0.0.2`, `*.2.1 IN TXT "manual: spam run; until 2099-01-01T00:00:00Z"`,
		`*.3.2.1 IN A 127.0.0.2`, `*.3.2.1 IN TXT "manual: spam run; until 2099-01-01T00:00:00Z"`, // repeats *.2.1
		`4.3.2.1 IN A 127.0.0.3`, `4.3.2.1 IN TXT "dictionary: 5 unknown; until 2099-01-01T00:00:00Z"`,
		`*.9.2.1 IN A 127.0.0.2`, `*.9.2.1 IN TXT "sasl: 10 failures; until 2099-01-01T00:00:00Z"`, // its own
		`5.9.2.1 IN A 127.0.0.2`, `5.9.2.1 IN TXT "sasl: 10 failures; until 2099-01-01T00:00:00Z"`, // an address: its own, same data or not
	)
	z, err := fullZone(testZone, append(rrs, rrs[0]), 100)
	if err != nil {
		t.Fatal(err)
	}
	es, skipped := z.entries()
	want := []string{"1.2.0.0/16 2 manual|spam run", "1.2.3.4/32 3 dictionary|5 unknown", "1.2.9.0/24 2 sasl|10 failures", "1.2.9.5/32 2 sasl|10 failures"}
	if got := listed(es); !slices.Equal(got, want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	if skipped[SkipCovered] != 1 {
		t.Fatalf("skipped %v, want one covered", skipped)
	}
}

func TestApplyIXFR(t *testing.T) {
	v1 := zoneRRs(t, 1, `7.113.0.203 IN A 127.0.0.2`, `8.113.0.203 IN A 127.0.0.2`)
	z, err := fullZone(testZone, append(v1, v1[0]), 100)
	if err != nil {
		t.Fatal(err)
	}
	soa := func(n uint32) dns.RR { return zoneRRs(t, n)[0] }
	a := func(s string) dns.RR { return zoneRRs(t, 0, s)[1] }
	for _, tc := range []struct {
		name    string
		rrs     []dns.RR
		want    []string
		wantErr bool
	}{
		{"one version", []dns.RR{soa(2), soa(1), a(`7.113.0.203 IN A 127.0.0.2`), soa(2), a(`9.113.0.203 IN A 127.0.0.4`), soa(2)},
			[]string{"203.0.113.8/32 2 |", "203.0.113.9/32 4 |"}, false},
		{"two versions", []dns.RR{soa(3), soa(1), a(`7.113.0.203 IN A 127.0.0.2`), soa(2), soa(2), a(`8.113.0.203 IN A 127.0.0.2`), soa(3), soa(3)},
			nil, false},
		{"from another serial", []dns.RR{soa(3), soa(2), a(`7.113.0.203 IN A 127.0.0.2`), soa(3), soa(3)}, nil, true},
		{"a version skipped", []dns.RR{soa(3), soa(1), soa(2), soa(3), soa(3)}, nil, true},
		{"cut short", []dns.RR{soa(2), soa(1), a(`7.113.0.203 IN A 127.0.0.2`), soa(2)}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, err := z.applyIXFR(tc.rrs, 100)
			if tc.wantErr {
				if !errors.Is(err, errNeedAXFR) {
					t.Fatalf("err %v, want errNeedAXFR", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			es, _ := next.entries()
			if got := listed(es); !slices.Equal(got, tc.want) {
				t.Fatalf("entries %v, want %v", got, tc.want)
			}
			if next.soa.Serial != tc.rrs[0].(*dns.SOA).Serial {
				t.Fatalf("serial %d", next.soa.Serial)
			}
		})
	}
	// The zone applied to is never changed.
	if es, _ := z.entries(); len(es) != 2 {
		t.Fatalf("the old zone changed: %v", listed(es))
	}
}
