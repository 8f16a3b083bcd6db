package logparse

import (
	"net/netip"
	"strconv"
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
			if err != ErrNotPostfix && err != ErrUnrecognized && err != ErrContext {
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

// FuzzParseClient: a client spec that parses round-trips. The name is the
// text before "[", the address is the bracketed one (without "IPv6:",
// unmapped), the port is the number after "]:" or 0, and writing them out
// as Postfix does parses back to the same three values.
func FuzzParseClient(f *testing.F) {
	for _, s := range []string{"a[192.0.2.1]", "[2001:db8::1]:25", "unknown[::ffff:1.2.3.4]", "[IPv6:::1]", "mx.example[198.51.100.7]:00587", "[2001:db8::2]:65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, addr, port, ok := ParseClient(s)
		if !ok {
			return
		}
		open := strings.IndexByte(s, '[')
		closeIdx := open + strings.IndexByte(s[open:], ']')
		if name != s[:open] || strings.ContainsAny(name, " [") {
			t.Fatalf("ParseClient(%q): name %q, want %q", s, name, s[:open])
		}
		written, err := netip.ParseAddr(strings.TrimPrefix(s[open+1:closeIdx], "IPv6:"))
		if err != nil || addr != written.Unmap() || addr.Zone() != "" {
			t.Fatalf("ParseClient(%q): address %v, bracketed text parses to %v (%v)", s, addr, written, err)
		}
		wantPort := uint64(0)
		if tail := s[closeIdx+1:]; tail != "" {
			if wantPort, err = strconv.ParseUint(strings.TrimPrefix(tail, ":"), 10, 16); err != nil || tail[0] != ':' {
				t.Fatalf("ParseClient(%q) accepted the tail %q", s, tail)
			}
		}
		if uint64(port) != wantPort {
			t.Fatalf("ParseClient(%q): port %d, want %d", s, port, wantPort)
		}
		spec := name + "[" + addr.String() + "]"
		if port != 0 {
			spec += ":" + strconv.Itoa(port)
		}
		name2, addr2, port2, ok := ParseClient(spec)
		if !ok || name2 != name || addr2 != addr || port2 != port {
			t.Fatalf("ParseClient(%q) = %q %v %d; written back as %q it parses to %q %v %d %v", s, name, addr, port, spec, name2, addr2, port2, ok)
		}
	})
}
