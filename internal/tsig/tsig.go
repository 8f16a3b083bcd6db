// Package tsig is the TSIG key of the config (RFC 8945 transaction
// signatures), shared by the DNSBL publisher and the peer follower: one
// shape, one check, and a secret that `config check` never prints.
package tsig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// Algorithm is the one algorithm supported.
const Algorithm = "hmac-sha256"

// Key is a `tsig:` config section.
type Key struct {
	Name      string `yaml:"name" json:"name"`
	Algorithm string `yaml:"algorithm" json:"algorithm"`
	Secret    string `yaml:"secret" json:"-"` // base64; never shown by config check or status
}

// MarshalYAML hides the secret in the effective configuration that
// `mxguard config check` prints.
func (k Key) MarshalYAML() (any, error) {
	type shown struct {
		Name      string `yaml:"name"`
		Algorithm string `yaml:"algorithm"`
		Secret    string `yaml:"secret"`
	}
	s := shown{Name: k.Name, Algorithm: k.Algorithm}
	if k.Secret != "" {
		s.Secret = "(hidden)"
	}
	return s, nil
}

// IsZero reports whether no key is configured.
func (k Key) IsZero() bool { return k.Name == "" && k.Secret == "" }

// FQDN is the key name in canonical form ("" without a key).
func (k Key) FQDN() string {
	if k.Name == "" {
		return ""
	}
	return dns.CanonicalName(k.Name)
}

// Secrets is the map miekg/dns servers and clients take.
func (k Key) Secrets() map[string]string {
	if k.Name == "" {
		return nil
	}
	return map[string]string{k.FQDN(): k.Secret}
}

// Validate checks a key that must be there; errors name the key below
// tsig ("name: …", "secret: …"). An empty algorithm means hmac-sha256.
func (k Key) Validate() error {
	var errs []error
	if k.Name == "" {
		errs = append(errs, errors.New("name: missing"))
	} else if _, ok := dns.IsDomainName(k.Name); !ok {
		errs = append(errs, fmt.Errorf("name: %q is not a key name", k.Name))
	}
	if a := strings.TrimSuffix(k.Algorithm, "."); a != "" && !strings.EqualFold(a, Algorithm) {
		errs = append(errs, fmt.Errorf("algorithm: %q: only %s is supported", k.Algorithm, Algorithm))
	}
	switch b, err := base64.StdEncoding.DecodeString(k.Secret); {
	case k.Secret == "":
		errs = append(errs, errors.New("secret: missing (base64, e.g. from `keymgr -t NAME hmac-sha256`, `tsig-keygen` or `openssl rand -base64 32`)"))
	case err != nil:
		errs = append(errs, fmt.Errorf("secret: not base64: %v", err))
	case len(b) < 16:
		errs = append(errs, fmt.Errorf("secret: %d bytes: want at least 16 (32 for %s)", len(b), Algorithm))
	}
	return errors.Join(errs...)
}
