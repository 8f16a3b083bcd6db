package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeKeyPair writes a self-signed certificate and its key into dir.
func writeKeyPair(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"mx.example"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// Values the runtime would not use as written, or could not use at all,
// are refused; each error names its key and the line it is on.
func TestLoadRefusesWithKeyAndLine(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, dir)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a pem file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, otherKey := writeKeyPair(t, t.TempDir())
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"ban zeros", "logs: [/var/log/mail.log]\nban:\n  base: 0s\n  factor: 0\n  max_prefix_v4: 0\n  forget_after: 0s\n",
			[]string{"line 3: ban.base: 0", "line 4: ban.factor: 0", "line 5: ban.max_prefix_v4: 0", "line 6: ban.forget_after: 0",
				"leave the key out for the default 1h"}},
		{"ban max and v6 zero", "ban:\n  max: 0s\n  max_prefix_v6: 0\n  ledger_retention: 0s\n",
			[]string{"line 2: ban.max: 0", "line 3: ban.max_prefix_v6: 0", "line 4: ban.ledger_retention: 0"}},
		{"top-level list", "- logs: [/var/log/mail.log]\n", []string{"line 1: want a mapping"}},
		{"second document", "logs: [/var/log/mail.log]\n---\n- logs: [/tmp/x.log]\n", []string{"line 3: a second YAML document"}},
		{"metrics port", "metrics_listen: 127.0.0.1:99999\n", []string{`line 1: metrics_listen: bad port in "127.0.0.1:99999"`}},
		{"metrics port not a number", "metrics_listen: 127.0.0.1:http\n", []string{`line 1: metrics_listen: bad port`}},
		{"guard listen port", "guard:\n  listen: \":70000\"\n", []string{`line 2: guard.listen: bad port in ":70000"`}},
		{"guard upstream port", "guard:\n  upstream: 127.0.0.1:65536\n", []string{`line 2: guard.upstream: bad port`}},
		{"guard resolver port", "guard:\n  resolver: 127.0.0.1:100000\n", []string{`line 2: guard.resolver: bad port`}},
		{"tls cert missing", "guard:\n  tls:\n    cert: " + missing + "\n    key: " + key + "\n",
			[]string{"line 3: guard.tls.cert: ", "no such file"}},
		{"tls key missing", "guard:\n  tls:\n    cert: " + cert + "\n    key: " + missing + "\n",
			[]string{"line 4: guard.tls.key: ", "no such file"}},
		{"tls cert garbage", "guard:\n  tls:\n    cert: " + garbage + "\n    key: " + key + "\n",
			[]string{"line 3: guard.tls.cert: ", "does not load"}},
		{"tls key of another cert", "guard:\n  tls:\n    cert: " + cert + "\n    key: " + otherKey + "\n",
			[]string{"line 3: guard.tls.cert: ", "does not load"}},
		{"tls half set", "guard:\n  tls:\n    cert: " + cert + "\n", []string{"line 2: guard.tls: set both cert and key"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, tc.yaml)
			_, err := Load(p)
			if err == nil {
				t.Fatalf("Load succeeded, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadAcceptsGoodTLSAndPorts(t *testing.T) {
	cert, key := writeKeyPair(t, t.TempDir())
	p := write(t, "metrics_listen: 127.0.0.1:65535\nguard:\n  listen: \":0\"\n  tls:\n    cert: "+cert+"\n    key: "+key+"\n")
	if _, err := Load(p); err != nil {
		t.Fatal(err)
	}
}

// A metrics endpoint on every interface is allowed but warned about, with
// the key and its line.
func TestWarnings(t *testing.T) {
	tests := []struct {
		listen string
		warn   bool
	}{
		{":9419", true},
		{"0.0.0.0:9419", true},
		{"[::]:9419", true},
		{"127.0.0.1:9419", false},
		{"[::1]:9419", false},
		{"localhost:9419", false},
	}
	for _, tc := range tests {
		c, err := Load(write(t, "log_level: info\nmetrics_listen: \""+tc.listen+"\"\n"))
		if err != nil {
			t.Fatalf("%s: %v", tc.listen, err)
		}
		ws := c.Warnings()
		if !tc.warn {
			if len(ws) != 0 {
				t.Errorf("%s: warnings %q, want none", tc.listen, ws)
			}
			continue
		}
		if len(ws) != 1 || !strings.HasPrefix(ws[0], "line 2: metrics_listen: ") || !strings.Contains(ws[0], "all interfaces") {
			t.Errorf("%s: warnings %q, want one naming line 2 and metrics_listen", tc.listen, ws)
		}
	}
	if ws := Default().Warnings(); len(ws) != 0 {
		t.Errorf("defaults warn: %q", ws)
	}
}
