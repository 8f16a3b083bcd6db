package dnsserve

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Refusals are logged once per Every, the next one with the count of
// those left out.
func TestRefusalLogOncePerInterval(t *testing.T) {
	var buf strings.Builder
	r := &RefusalLog{Log: slog.New(slog.NewTextHandler(&buf, nil)), Every: 10 * time.Second}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for i := range 100 {
		r.Warn(t0.Add(time.Duration(i)*50*time.Millisecond), "zone transfer refused", "client", "192.0.2.9")
	}
	r.Warn(t0.Add(11*time.Second), "zone transfer refused", "client", "192.0.2.9")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Contains(lines[0], "not_logged") || !strings.Contains(lines[1], "not_logged_since_last=99") {
		t.Fatalf("logged:\n%s", buf.String())
	}
}
