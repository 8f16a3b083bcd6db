package config

import (
	"strings"
	"testing"
)

func TestPublishDNSBL(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings of the error; none: loads
	}{
		{"good", "publish:\n  dnsbl:\n    enabled: true\n    zone: bl.example.org\n    listen: 127.0.0.1:5300\n    codes:\n      dictionary: 127.0.0.5\n    secondaries: [192.0.2.2, \"[2001:db8::2]:5300\"]\n    tsig:\n      name: fleet-xfr\n      secret: c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=\n", nil},
		{"unknown key", "publish:\n  dnsbl:\n    zones: x\n", []string{`line 3: unknown key "zones" in publish.dnsbl (did you mean "zone"?)`}},
		{"no zone", "publish:\n  dnsbl:\n    enabled: true\n", []string{`line 2: publish.dnsbl.zone: required`}},
		{"bad code", "publish:\n  dnsbl:\n    enabled: true\n    zone: bl.example\n    codes:\n      manual: 10.0.0.1\n",
			[]string{`line 6: publish.dnsbl.codes.manual: "10.0.0.1": want an address in 127.0.0.0/8`}},
		{"secondaries need tsig", "publish:\n  dnsbl:\n    enabled: true\n    zone: bl.example\n    secondaries: [192.0.2.2]\n",
			[]string{`publish.dnsbl.tsig.name: missing`}},
		{"rbldnsd_file relative", "state_dir: /var/lib/mxguard\npublish:\n  dnsbl:\n    enabled: true\n    zone: bl.example\n    rbldnsd_file: fleet.rbl\n",
			[]string{`line 6: publish.dnsbl.rbldnsd_file: "fleet.rbl": want an absolute path`}},
		{"rbldnsd_file in state_dir", "state_dir: /var/lib/mxguard\npublish:\n  dnsbl:\n    enabled: true\n    zone: bl.example\n    rbldnsd_file: /var/lib/mxguard/rbl/fleet.rbl\n",
			[]string{`line 6: publish.dnsbl.rbldnsd_file: "/var/lib/mxguard/rbl/fleet.rbl" is inside state_dir`}},
		{"own zone followed", "publish:\n  dnsbl:\n    enabled: true\n    zone: bl.mx2.example.org\n    listen: 127.0.0.1:5300\n" + peerOK + "    notify_listen: 127.0.0.1:5300\n",
			[]string{`line 8: peers[0].zone: "bl.mx2.example.org" is publish.dnsbl.zone`, `line 11: peers[0].notify_listen: "127.0.0.1:5300" is publish.dnsbl.listen`}},
		{"disabled is not checked", "publish:\n  dnsbl:\n    codes:\n      manual: nonsense\n", nil},
	} {
		c, err := Parse([]byte(tc.yaml))
		if err == nil {
			err = c.Validate()
		}
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want %q", tc.name, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
			}
		}
	}
	c, _ := Parse([]byte("publish:\n  dnsbl:\n    enabled: true\n    zone: bl.example\n    detectors: [dictionnary]\n    codes:\n      dictionary: 127.0.0.5\n"))
	if ws := c.Warnings(); len(ws) != 1 || !strings.HasPrefix(ws[0], `line 5: publish.dnsbl.detectors[0]: "dictionnary": no detector of that name (known: dictionary,`) {
		t.Errorf("warnings = %q", ws)
	}
	if got := c.Publish.DNSBL.Codes; got["dictionary"] != "127.0.0.5" || got["manual"] != "127.0.0.10" {
		t.Errorf("codes = %v: want the file's entry over the defaults", got)
	}
}
