package policy

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// FuzzPolicyRequest: whatever arrives, the parser neither panics nor
// reads past its limits, a request it accepts has request=
// smtpd_access_policy and values within max_attribute_length without a
// line break, and deciding on it never panics.
func FuzzPolicyRequest(f *testing.F) {
	f.Add([]byte(req()))
	f.Add([]byte(req() + req("protocol_state", "CONNECT")))
	f.Add([]byte("request=smtpd_access_policy\n\n"))
	f.Add([]byte("request=smtpd_access_policy\r\nclient_address=::ffff:1.2.3.4\r\nhelo_name=[IPv6:::1]\r\n\r\n"))
	f.Add([]byte("request=smtpd_access_policy\nsender=" + strings.Repeat("x", 300) + "\n\n"))
	f.Add([]byte("a\x00=b\n\n"))
	f.Add([]byte("=\n\n"))
	f.Add([]byte("request=smtpd_access_policy"))
	cfg := DefaultConfig()
	cfg.Hostname = "mx.ours.example"
	cfg.Limits.MaxAttributeLength = 64
	cfg.Limits.MaxAttributes = 10
	cfg.Limits.MaxRequestBytes = 1024
	cfg.RateLimit.Limits = []RateLimit{{Count: 2, Window: Duration(3600e9)}}
	s, err := New(cfg, Deps{Blocklist: &memBlocklist{}})
	if err != nil {
		f.Fatal(err)
	}
	lim := s.lim
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 16) // small: long lines on every path
		cs := &connState{}
		for range 20 {
			err := readRequest(br, &cs.req, lim, nil)
			if err != nil {
				if cs.req.size > lim.maxBytes+16 {
					t.Fatalf("read %d bytes past the limit %d", cs.req.size, lim.maxBytes)
				}
				switch err {
				case io.EOF, errEOFInRecord, errMalformed, errTooMany, errTooBig, errNotPolicy:
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			r := &cs.req
			if r.str(r.request) != "smtpd_access_policy" {
				t.Fatalf("accepted without request=: %q", data)
			}
			if r.attrs > lim.maxAttrs || r.size > lim.maxBytes {
				t.Fatalf("accepted %d attributes, %d bytes", r.attrs, r.size)
			}
			for _, sp := range []span{r.state, r.clientAddress, r.clientName, r.helo, r.sender, r.recipient, r.sasl, r.instance, r.serverAddress} {
				v := r.str(sp)
				if len(v) > lim.maxValue || strings.ContainsAny(v, "\n\x00") {
					t.Fatalf("value %q", v)
				}
			}
			if a := s.decide(cs, r); a == "" || strings.ContainsAny(a, "\n\x00") {
				t.Fatalf("action %q", a)
			}
		}
	})
}

// Once a connection's buffer has grown, parsing a request allocates
// nothing, however many attributes it has.
func TestParseAllocatesNothing(t *testing.T) {
	raw := []byte(req("ccert_subject", "x", "policy_context", "y", "stress", "", "etrn_domain", ""))
	br := bufio.NewReaderSize(&repeatReader{b: raw}, 4096)
	r := &request{buf: make([]byte, 0, 1024)}
	lim := readLimits{maxValue: 512, maxAttrs: 100, maxBytes: 16384}
	if n := testing.AllocsPerRun(1000, func() {
		if err := readRequest(br, r, lim, nil); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per request, want 0", n)
	}
	if r.str(r.sender) != "alice@remote.example" || r.str(r.state) != "RCPT" {
		t.Fatalf("parsed %q %q", r.str(r.sender), r.str(r.state))
	}
}
