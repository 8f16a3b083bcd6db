package smtpcheck

import (
	"testing"

	"github.com/mxguard/mxguard/internal/event"
)

func TestCheckHelo(t *testing.T) {
	deny := map[string]bool{"localhost": true, "mx.ours.example": true}
	for _, tc := range []struct {
		name      string
		wantCheck string
		wantWhy   event.Reason
		wantCode  string
	}{
		{"mta.remote.example", "", event.ReasonNone, ""},
		{"[192.0.2.1]", "", event.ReasonNone, ""},
		{"[IPv6:2001:db8::1]", "", event.ReasonNone, ""},
		{"localhost", "helo_deny", event.ReasonHeloAccess, "554"},
		{"MX.Ours.Example.", "helo_deny", event.ReasonHeloAccess, "554"},
		{"192.0.2.1", "helo_fqdn", event.ReasonHeloNonFQDN, "504"},
		{"nodot", "helo_fqdn", event.ReasonHeloNonFQDN, "504"},
		{"bad_name!.example", "helo_fqdn", event.ReasonHeloInvalid, "501"},
		{"[not-an-ip]", "helo_fqdn", event.ReasonHeloInvalid, "501"},
	} {
		p := CheckHelo(tc.name, tc.name, deny, true, true)
		if p.Check != tc.wantCheck || p.Reason != tc.wantWhy || len(p.Reply) < 3 && tc.wantCode != "" || tc.wantCode != "" && p.Reply[:3] != tc.wantCode {
			t.Errorf("CheckHelo(%q) = %+v, want %s %v %s", tc.name, p, tc.wantCheck, tc.wantWhy, tc.wantCode)
		}
	}
	if p := CheckHelo("localhost", "localhost", deny, false, true); p.Check != "helo_fqdn" {
		t.Errorf("deny off: %+v, want the FQDN check", p)
	}
	if p := CheckHelo("nodot", "nodot", deny, true, false); p.Check != "" {
		t.Errorf("fqdn off: %+v", p)
	}
}

func TestHeloDenyListNormalised(t *testing.T) {
	deny := map[string]bool{HeloName("Friend."): true, HeloName("MX.Example.COM"): true}
	for _, name := range []string{"friend", "FRIEND.", "mx.example.com.", "Mx.Example.Com"} {
		if p := CheckHelo(name, name, deny, true, false); p.Check != "helo_deny" {
			t.Errorf("%s: %+v, want helo_deny", name, p)
		}
	}
	if p := CheckHelo("other.example", "other.example", deny, true, false); p.Check != "" {
		t.Errorf("other.example: %+v", p)
	}
}
