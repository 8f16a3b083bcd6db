package tsig

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		key  Key
		want []string // substrings of the error; none = valid
	}{
		{Key{Name: "mx1-mx2", Algorithm: "hmac-sha256", Secret: secret}, nil},
		{Key{Name: "mx1-mx2", Secret: secret}, nil},
		{Key{Name: "mx1-mx2", Algorithm: "HMAC-SHA256.", Secret: secret}, nil},
		{Key{Secret: secret}, []string{"name: missing"}},
		{Key{Name: "a..b", Secret: secret}, []string{`name: "a..b" is not a key name`}},
		{Key{Name: "k", Algorithm: "hmac-md5", Secret: secret}, []string{`algorithm: "hmac-md5": only hmac-sha256`}},
		{Key{Name: "k"}, []string{"secret: missing"}},
		{Key{Name: "k", Secret: "not base64!"}, []string{"secret: not base64"}},
		{Key{Name: "k", Secret: "c2hvcnQ="}, []string{"secret: 5 bytes: want at least 16"}},
	} {
		err := tc.key.Validate()
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%+v: %v", tc.key, err)
			}
			continue
		}
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %v, want %q", tc.key, err, w)
			}
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	out, err := yaml.Marshal(struct {
		TSIG Key `yaml:"tsig"`
	}{Key{Name: "k", Algorithm: Algorithm, Secret: secret}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), secret) || !strings.Contains(string(out), "(hidden)") {
		t.Errorf("config output shows the secret:\n%s", out)
	}
}

func TestSecrets(t *testing.T) {
	if (Key{}).Secrets() != nil || (Key{}).FQDN() != "" {
		t.Error("no key: want no secrets")
	}
	k := Key{Name: "Mx1-Mx2", Secret: secret}
	if got := k.Secrets()["mx1-mx2."]; got != secret {
		t.Errorf("Secrets = %v, want the key under its canonical name", k.Secrets())
	}
}
