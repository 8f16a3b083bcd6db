package detectors

import (
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logparse"
)

// One message to postmaster@ every 100 s keeps a client's flood exemption
// ("mail accepted within two windows") alive forever; with error_burst no
// longer counting flood's events, 600 dropped handshakes in 10 minutes
// decide nothing at all.
func TestAcceptedMailDoesNotBuyUnlimitedFlood(t *testing.T) {
	e, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := logparse.NewParser(time.UTC, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	const ip = "192.0.2.99"
	var lines []string
	for sec := 0; sec < 600; sec++ {
		if sec%100 == 0 {
			lines = append(lines, received(sec, 9000+sec, sec/100, "smtpd", ip)...)
		}
		lines = append(lines, lostAfter(sec, 10000+sec, "EHLO", ip)...)
	}
	var decided []string
	for _, l := range lines {
		ev, err := p.Parse(l)
		if err != nil {
			continue
		}
		for _, d := range e.Observe(ev.Clone()) {
			decided = append(decided, d.Detector)
		}
	}
	if len(decided) == 0 {
		t.Error("600 connections dropped after EHLO in 10 minutes (one every second) decided nothing: six accepted messages exempt the client")
	}
}

// A relay whose mail we accept drops about its concurrency at once when
// it restarts; three times flood's threshold within a window decides
// however recently its mail was accepted.
func TestFloodExemptionIsBounded(t *testing.T) {
	const ip = "198.51.100.30"
	drops := func(n int) []string {
		lines := received(0, 2000, 1, "smtpd", ip)
		return append(lines, linesN(n, func(i int) []string { return lostAfter(30, 3000+i, "EHLO", ip) })...)
	}
	for _, tc := range []struct {
		name string
		n    int
		want string
	}{
		{"relay restart drops 23 sessions", 23, ""},
		{"24 drops are three times the threshold", 24, "24: flood 198.51.100.30/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(decideLines(t, DefaultConfig(), drops(tc.n)), "\n")
			if got != tc.want {
				t.Errorf("decisions %q, want %q", got, tc.want)
			}
		})
	}
}
