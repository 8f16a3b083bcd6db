package logparse

import (
	"net/netip"
	"os"
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
	if b, err := os.ReadFile("testdata/limits-lab/limits.log"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f.Add(l)
		}
	}
	f.Add("Mar 7 02:09:33 mx postfix/smtpd[1]: warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while reading:../ssl/record/rec_layer_s3.c:689:")
	f.Add("Dec 01 17:11:47 mx postfix/smtpd[5122]: warning: Connection rate limit exceeded: 5 from unknown[203.0.113.62] for service 127.0.0.1:2625")
	f.Add("Dec 01 17:11:48 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <>: Sender address rejected: Access denied; from=<> to=<c@d.example> proto=ESMTP helo=<x> sasl_method=PLAIN sasl_username=u sasl_method=X")
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
		detail := ev.Detail
		if ev.Kind == event.KindRateLimit {
			// the limit's name, not a text of the line
			switch detail {
			case event.LimitConnectionRate, event.LimitConnectionCount, event.LimitMessageRate, event.LimitRecipientRate, event.LimitNewTLSRate:
			default:
				t.Fatalf("rate limit %q in %q", detail, line)
			}
			detail = ""
		}
		if ev.Kind == event.KindRejectWarning && ev.Abuse {
			t.Fatalf("reject_warning is abuse: %q", line)
		}
		for _, s := range []string{ev.Host, ev.Service, ev.QueueID, ev.ClientName, ev.Helo, ev.From, ev.To, ev.DSN, detail} {
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
