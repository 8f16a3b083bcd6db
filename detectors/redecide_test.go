package detectors

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// A decision the ban manager could not record is taken back: the detector
// is not quiet for the client, and its next evidence within one window
// decides again at once with the evidence of both.
func TestRedecide(t *testing.T) {
	m := time.Minute
	saslFail := func(ip string) func(i int, at time.Duration) event.Event {
		return func(_ int, at time.Duration) event.Event { return ev(at, ip, event.KindSASLFail) }
	}
	perPrefix := DefaultConfig()
	perPrefix.SASLBruteforce.Enabled, perPrefix.SASLBruteforce.PerPrefix = true, true
	perPrefix.SASLBruteforce.Threshold = 100
	perPrefix.SASLBruteforce.LongThreshold = 0
	perPrefix.SASLBruteforce.PrefixThreshold = 4
	tests := []struct {
		name     string
		cfg      Config
		first    []event.Event // ends in the decision taken back
		then     []event.Event // the next evidence
		redecide bool
		want     []string // decisions made by then
		evidence int      // of the last one
	}{
		{
			name: "dictionary muted without redecide",
			cfg:  DefaultConfig(),
			first: every(5, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@x", i))...)
			}),
			then: one(ev(6*m, ipA, event.KindReject, unknown("v@x")...)),
		},
		{
			name: "dictionary redecides at the next evidence",
			cfg:  DefaultConfig(),
			first: every(5, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@x", i))...)
			}),
			then:     one(ev(6*m, ipA, event.KindReject, unknown("v@x")...)),
			redecide: true,
			want:     []string{"0: dictionary 203.0.113.7/32 n=6"},
			evidence: 6,
		},
		{
			name: "another client's evidence does not redecide",
			cfg:  DefaultConfig(),
			first: every(5, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@x", i))...)
			}),
			then:     one(ev(6*m, ipB, event.KindReject, unknown("v@x")...)),
			redecide: true,
		},
		{
			name: "a window later the threshold counts again",
			cfg:  DefaultConfig(),
			first: every(5, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, ipA, event.KindReject, unknown(fmt.Sprintf("u%d@x", i))...)
			}),
			then:     one(ev(20*m, ipA, event.KindReject, unknown("v@x")...)),
			redecide: true,
		},
		{
			name: "per-prefix dictionary decision",
			cfg:  DefaultConfig(),
			first: every(15, 0, m, func(i int, at time.Duration) event.Event {
				return ev(at, fmt.Sprintf("203.0.113.%d", 1+i%3), event.KindReject, unknown(fmt.Sprintf("u%d@x", i))...)
			}),
			then:     one(ev(20*m, "203.0.113.9", event.KindReject, unknown("v@x")...)),
			redecide: true,
			want:     []string{"0: dictionary 203.0.113.0/24 n=16"},
			evidence: 16,
		},
		{
			name: "score decision",
			cfg:  DefaultConfig(),
			first: one(
				ev(0, ipA, event.KindDisconnect, detail("mail=1 rcpt=1 data=1 quit=1 commands=4")),
				ev(m, ipA, event.KindDisconnect, detail("mail=1 rcpt=1 data=1 quit=1 commands=4")),
				ev(2*m, ipA, event.KindReject, reason(event.ReasonSenderNonFQDN), stage("MAIL")),
				ev(3*m, ipA, event.KindReject, reason(event.ReasonSenderNonFQDN), stage("MAIL"))),
			then:     one(ev(4*m, ipA, event.KindHostnameMismatch, noAbuse())),
			redecide: true,
			want:     []string{"0: score 203.0.113.7/32 n=5"},
			evidence: 5,
		},
		{
			name:     "per-prefix SASL decision",
			cfg:      perPrefix,
			first:    every(4, 0, m, saslFail(fmt.Sprintf("203.0.113.%d", 1))),
			then:     every(1, 5*m, m, saslFail("203.0.113.2")),
			redecide: true,
			want:     []string{"0: sasl_bruteforce 203.0.113.0/24 n=5"},
			evidence: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, first, e := run(t, tt.cfg, tt.first)
			if len(first) != 1 {
				t.Fatalf("first decisions = %v, want one", first)
			}
			if tt.redecide {
				e.Redecide(first[0])
			}
			var got []string
			var last Decision
			for i, x := range tt.then {
				for _, d := range e.Observe(x) {
					got, last = append(got, summary(i, d)), d
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("decisions = %q, want %q", got, tt.want)
			}
			if tt.want == nil {
				return
			}
			if last.Evidence != tt.evidence || last.Reason != first[0].Reason {
				t.Errorf("redecided %+v, want evidence %d and the first reason %q", last, tt.evidence, first[0].Reason)
			}
			if !slices.Contains(last.Lines, first[0].Lines[len(first[0].Lines)-1]) || len(last.Lines) > tt.cfg.EvidenceLines {
				t.Errorf("lines %q: want the first decision's kept, at most %d", last.Lines, tt.cfg.EvidenceLines)
			}
			// Decided again: quiet again.
			if ds := e.Observe(tt.then[len(tt.then)-1]); len(ds) != 0 {
				t.Errorf("decided again after the redecision: %+v", ds)
			}
		})
	}
}
