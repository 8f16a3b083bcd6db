package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/daemon"
	"github.com/mxguard/mxguard/internal/peers"
)

// status and explain name the peer a mirrored ban comes from.
func TestWritePeersStatusAndExplanation(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	writeStatus(&b, daemon.Status{Started: at, Peers: []peers.Status{{Name: "mx2", Zone: "bl.mx2.example.org.", Serial: 42,
		LastTransfer: at, LastKind: "ixfr", LastCheck: at, Entries: 1200,
		Skipped: map[string]int{"test": 1, "allowlist": 3}, LastError: ""}}})
	for _, w := range []string{"PEER", "peer:mx2", "bl.mx2.example.org.", "42", "(ixfr)", "1200", "allowlist 3, test 1"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("status lacks %q:\n%s", w, b.String())
		}
	}
	b.Reset()
	writeStatus(&b, daemon.Status{Started: at})
	if strings.Contains(b.String(), "peers:") {
		t.Errorf("status without peers shows a peers table:\n%s", b.String())
	}

	b.Reset()
	writeExplanation(&b, ban.Explanation{Prefix: netip.MustParsePrefix("203.0.113.7/32"), Banned: true,
		Peers: []ban.Ban{{Detector: "peer:mx2", Reason: "dictionary: 5 unknown recipients", Since: at, Until: at.Add(time.Hour)}}})
	for _, w := range []string{"BANNED", "listed by peer:mx2 (mirrored, no offence counted)", "dictionary: 5 unknown recipients"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("explain lacks %q:\n%s", w, b.String())
		}
	}
	if strings.Contains(b.String(), "no record") {
		t.Errorf("explain says there is no record:\n%s", b.String())
	}
}
