package smtpcheck

import (
	"net/netip"
	"testing"
)

// FuzzParseSite reads any site text (Postfix's postscreen_dnsbl_sites
// syntax): it never panics, a site it accepts has a zone and a weight of
// at least 1, and no accepted pattern ever lists 127.255.255.x (a DNSBL's
// error answers).
func FuzzParseSite(f *testing.F) {
	for _, s := range []string{"zen.spamhaus.org", "zen.spamhaus.org*3", "zen.spamhaus.org=127.0.0.[2..11]*3",
		"bl.example=127.0.[0;1].[2;4;10..12]", "bl.example=127.0.0.[255..0]", "x=1.2.3", "x*0", "=127.0.0.2", "x=[0..255].0.0.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		site, err := ParseSite(s)
		if err != nil {
			return
		}
		if site.Zone == "" || site.Weight < 1 {
			t.Fatalf("%q accepted as %+v", s, site)
		}
		for _, a := range []string{"127.255.255.252", "127.255.255.254", "127.255.255.255"} {
			if site.Listed(netip.MustParseAddr(a)) {
				t.Fatalf("%q lists the error answer %s", s, a)
			}
		}
	})
}
