package logparse

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// FuzzParse checks the invariants of Parse on any input: no panic, a known
// error or an event whose fields are substrings of the line and whose
// client address, if any, is valid and unmapped.
func FuzzParse(f *testing.F) {
	for _, l := range benchLines(f) {
		f.Add(l)
	}
	f.Add("Nov 25 10:49:00.1 postfix/postscreen[1]: DNSBL rank 99999999999 for [::1]:1")
	f.Add("2026-11-25T10:49:00,5+01:00 h postfix/smtpd[1]: warning: x[1.2.3.4]: SASL  authentication failed")
	f.Fuzz(func(t *testing.T, line string) {
		p := NewParser(time.UTC, refTime)
		ev, err := p.Parse(line)
		if err != nil {
			if err != ErrNotPostfix && err != ErrUnrecognized {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if ev.Kind == event.KindNone {
			t.Fatalf("no kind for %q", line)
		}
		for _, s := range []string{ev.Host, ev.Service, ev.QueueID, ev.ClientName, ev.Helo, ev.From, ev.To, ev.DSN, ev.Detail} {
			if !strings.Contains(line, s) {
				t.Fatalf("field %q not in line %q", s, line)
			}
		}
		if ev.Client.IsValid() && ev.Client.Is4In6() {
			t.Fatalf("mapped address %v", ev.Client)
		}
		if ev.Client != (netip.Addr{}) && ev.Client.Zone() != "" {
			t.Fatalf("zoned address %v", ev.Client)
		}
	})
}

// FuzzParseClient: a client spec that parses round-trips its address.
func FuzzParseClient(f *testing.F) {
	for _, s := range []string{"a[192.0.2.1]", "[2001:db8::1]:25", "unknown[::ffff:1.2.3.4]", "[IPv6:::1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, addr, port, ok := ParseClient(s)
		if !ok {
			return
		}
		if !addr.IsValid() || port < 0 || port > 65535 || strings.ContainsAny(name, " [") {
			t.Fatalf("ParseClient(%q) = %q %v %d", s, name, addr, port)
		}
	})
}
