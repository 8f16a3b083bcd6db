package smtpguard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/internal/event"
)

// TestBadInput sends hostile input; each case must end with the right
// limit or error, no crash, and the goroutines must go back to baseline.
func TestBadInput(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limits.CommandTimeout = Duration(500 * time.Millisecond)
		c.Limits.LineTimeout = Duration(500 * time.Millisecond)
		c.Limits.DataTimeout = Duration(700 * time.Millisecond)
		c.Limits.IdleTimeout = Duration(300 * time.Millisecond)
		c.Limits.MaxMessageBytes = 1000
		c.Limits.HardErrorLimit = 0 // let every case reach its own limit
	})
	// Warm up (the first session starts go-smtp's and the fake's goroutines).
	if err := sendMail(t, h.addr, "a@example.net", []string{"alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()
	i := 0

	for _, tc := range []struct {
		name  string
		run   func(c *tclient)
		kind  event.Kind
		final string // prefix of the last reply
	}{
		{"slowloris", func(c *tclient) {
			for _, b := range []byte("EHLO slow.example.org\r\n") {
				c.c.Write([]byte{b})
				time.Sleep(100 * time.Millisecond)
				if b == 'l' { // well past line_timeout by now
					break
				}
			}
		}, event.KindTimeout, "421 4.4.2"},
		{"1 MB command line", func(c *tclient) {
			c.c.Write([]byte("EHLO " + strings.Repeat("a", 1<<20) + "\r\n"))
		}, event.KindCommandLimit, "500 5.5.0"},
		{"binary junk", func(c *tclient) {
			c.c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, '\r', '\n'})
		}, event.KindNonSMTP, "221 2.7.0"},
		{"HTTP request", func(c *tclient) {
			c.c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		}, event.KindNonSMTP, "221 2.7.0"},
		{"DATA without end", func(c *tclient) {
			c.cmd("EHLO c.example.org", 250)
			c.cmd("MAIL FROM:<a@example.net>", 250)
			c.cmd("RCPT TO:<alice@example.com>", 250)
			c.cmd("DATA", 354)
			c.send("Subject: never ends\r\n\r\nbody\r\n")
		}, event.KindTimeout, "451 4.3.0"},
		{"message too large", func(c *tclient) {
			c.cmd("EHLO c.example.org", 250)
			c.cmd("MAIL FROM:<a@example.net>", 250)
			c.cmd("RCPT TO:<alice@example.com>", 250)
			c.cmd("DATA", 354)
			c.send(strings.Repeat("0123456789012345678901234567890123456789\r\n", 100) + ".\r\n")
			c.expect(552)
			c.cmd("QUIT", 221)
		}, event.KindNone, ""},
		{"lone CR and NUL in commands", func(c *tclient) {
			c.cmd("EHLO c.example.org", 250)
			c.cmd("MAIL FROM:<a\x00b@example.net>", 501)
			c.cmd("NOOP\rMAIL FROM:<x@example.net>", 502)
			c.cmd("QUIT", 221)
		}, event.KindNone, ""},
	} {
		i++
		t.Run(tc.name, func(t *testing.T) {
			// each case from its own address: the detectors ban offenders
			c := dialFrom(t, h.addr, fmt.Sprintf("127.0.0.%d", 10+i))
			c.expect(220)
			tc.run(c)
			if tc.final != "" {
				_, text := c.reply()
				if !strings.HasPrefix(text, tc.final) {
					t.Fatalf("last reply %q, want %s", text, tc.final)
				}
				if !c.closed() {
					t.Error("not closed")
				}
			}
			if tc.kind != event.KindNone {
				h.ev.find(t, tc.kind, event.ReasonNone)
			}
			c.c.Close()
		})
	}
	if n := len(h.up.messages()); n != 1 {
		t.Errorf("upstream got %d messages, want only the warm-up one", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines %d > baseline %d\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
	if st := h.g.Stats(); st.Active != 0 || st.InPause != 0 {
		t.Errorf("stats after all closed: %+v", st)
	}
}

func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "guard.test"},
		DNSNames: []string{"guard.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return
}

func TestSTARTTLS(t *testing.T) {
	cert, key := selfSigned(t)
	h := newHarness(t, func(c *Config) { c.TLS = TLSConfig{Cert: cert, Key: key} })
	c := dial(t, h.addr)
	c.expect(220)
	if ehlo := c.cmd("EHLO c.example.org", 250); !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("no STARTTLS in %q", ehlo)
	}
	c.cmd("STARTTLS", 220)
	tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = &tclient{t: t, c: tc, r: newReader(tc)}
	c.cmd("MAIL FROM:<a@example.net>", 503) // RFC 3207: EHLO again first
	if ehlo := c.cmd("EHLO c.example.org", 250); strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS offered inside TLS: %q", ehlo)
	}
	// pipelining still policed (and allowed) inside TLS
	c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.com>\r\n")
	c.expect(250)
	c.expect(250)
	c.cmd("DATA", 354)
	c.send(testWire + ".\r\n")
	c.expect(250)
	c.cmd("QUIT", 221)
	if n := len(h.up.messages()); n != 1 {
		t.Fatalf("upstream got %d", n)
	}
}

func TestSTARTTLSInjection(t *testing.T) {
	cert, key := selfSigned(t)
	h := newHarness(t, func(c *Config) { c.TLS = TLSConfig{Cert: cert, Key: key} })
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO c.example.org", 250)
	c.send("STARTTLS\r\nRSET\r\n") // CVE-2011-0411 style command injection
	c.expect(554)
	h.ev.find(t, event.KindPipelining, event.ReasonNone)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want string // substring of the error; "" = valid
	}{
		{"defaults", ``, ""},
		{"full", `
listen: "127.0.0.1:2525"
upstream: "127.0.0.1:10025"
handoff: proxy
hostname: mx.example.com
greet_pause: 2s
allowlist: [10.0.0.0/8, "192.0.2.1"]
domains: [example.com]
recipients: [alice@example.com, "@example.org"]
checks: {helo_fqdn: warn, sender_domain_dns: reject}
limits: {soft_error_limit: 2, hard_error_limit: 5, error_sleep: 0}
dnsbl: {sites: ["zen.example*3", "b.example"], threshold: 3, timeout: 2s}
`, ""},
		{"bad handoff", `handoff: smtp`, "guard.handoff"},
		{"bad upstream", `upstream: nowhere`, "guard.upstream"},
		{"bad check", `checks: {relay: maybe}`, "guard.checks.relay"},
		{"bad allowlist", `allowlist: [10.0.0.0/33]`, "guard.allowlist"},
		{"bad dnsbl weight", `dnsbl: {sites: ["zen.example*x"]}`, "guard.dnsbl.sites"},
		{"soft above hard", `limits: {soft_error_limit: 20, hard_error_limit: 10}`, "guard.limits.soft_error_limit"},
		{"tls half", `tls: {cert: /x}`, "guard.tls"},
		{"bad duration", `greet_pause: 5`, "line 1"},
		{"recipient without @", `recipients: [alice]`, "guard.recipients"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Hostname = "guard.test"
			dec := yaml.NewDecoder(strings.NewReader(tc.yaml))
			dec.KnownFields(true)
			err := dec.Decode(&cfg)
			if err != nil && err.Error() == "EOF" {
				err = nil
			}
			if err == nil {
				err = cfg.Validate()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to name %q", err, tc.want)
			}
		})
	}
}
