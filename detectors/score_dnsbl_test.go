package detectors

import (
	"testing"

	"github.com/mxguard/mxguard/internal/event"
)

// A postscreen DNSBL rank the policy does not call abuse (a listed but
// trusted network, a warn-mode finding) is not a weak signal either.
func TestScoreDNSBLRankNeedsAbuse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		abuse bool
		count int
		want  scoreClass
	}{
		{"abuse below the rank", true, 2, scDNSBL},
		{"not abuse below the rank", false, 2, scNone},
		{"abuse at the rank (dnsbl's)", true, 3, scNone},
		{"no rank", true, 0, scNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := event.Event{Kind: event.KindDNSBL, Count: tc.count, Abuse: tc.abuse}
			if got, _ := scoreClassOf(&ev, 3); got != tc.want {
				t.Errorf("scoreClassOf = %v, want %v", got, tc.want)
			}
		})
	}
}
