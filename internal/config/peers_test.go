package config

import (
	"strings"
	"testing"
	"time"
)

const peerOK = `peers:
  - name: mx2
    zone: bl.mx2.example.org
    primary: 192.0.2.53:53
    tsig: {name: mx2-to-mx1, algorithm: hmac-sha256, secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="}
`

func TestPeersConfig(t *testing.T) {
	c, err := Load(write(t, peerOK))
	if err != nil {
		t.Fatal(err)
	}
	p := c.PeersConfig()[0]
	if p.MaxBan.D() != 24*time.Hour || p.MaxEntries != 1_000_000 || p.ZoneFQDN() != "bl.mx2.example.org." {
		t.Fatalf("defaults: %+v", p)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "c2VjcmV0") || !strings.Contains(string(out), "secret: (hidden)") {
		t.Fatalf("config check shows the TSIG secret:\n%s", out)
	}
}

func TestPeersConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", peerOK + "    bogus: 1\n", []string{`line 6: unknown key "bogus" in peers[0]`}},
		{"missing everything", "peers:\n  - name: mx2\n", []string{
			"peers[0].zone: missing", "peers[0].primary: \"\": missing", "peers[0].tsig: missing"}},
		{"bad values", `peers:
  - name: MX 2
    zone: "bad zone..x"
    primary: ns.example.org
    tsig: {name: k, algorithm: hmac-md5, secret: "c2hvcnQ="}
    notify_listen: "0.0.0.0"
    refresh: 1s
    max_ban: 0s
    max_entries: 0
`, []string{
			`line 2: peers[0].name: "MX 2"`, `line 3: peers[0].zone: "bad zone..x" is not a domain name`,
			`line 4: peers[0].primary: "ns.example.org": want host:port`, `peers[0].tsig.algorithm: "hmac-md5": only hmac-sha256 is supported`,
			`peers[0].tsig.secret: 5 bytes`, `line 6: peers[0].notify_listen`, `line 7: peers[0].refresh: 1s is too often`,
			`line 8: peers[0].max_ban: 0 is not a usable value`, `line 9: peers[0].max_entries: 0 is not a usable value`}},
		{"two of a name", peerOK + strings.Replace(strings.TrimPrefix(peerOK, "peers:\n"), "bl.mx2", "bl.mx3", 1),
			[]string{`peers[1].name: "mx2" is also peers[0].name`}},
		{"two of a zone", peerOK + strings.Replace(strings.TrimPrefix(peerOK, "peers:\n"), "name: mx2", "name: mx3", 1),
			[]string{`peers[1].zone: "bl.mx2.example.org" is also peers[0].zone`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(t, tc.yaml))
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
