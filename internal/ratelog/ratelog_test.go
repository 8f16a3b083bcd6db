package ratelog

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A kind is logged once per interval, the next one with the count of
// those left out; kinds do not hold each other back.
func TestOncePerIntervalPerKind(t *testing.T) {
	var buf strings.Builder
	r := New(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second)
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for i := range 100 {
		r.WarnAt(t0.Add(time.Duration(i)*50*time.Millisecond), "transfer", "zone transfer refused", "client", "192.0.2.9")
	}
	r.WarnAt(t0.Add(time.Second), "notify", "NOTIFY refused")
	r.WarnAt(t0.Add(11*time.Second), "transfer", "zone transfer refused", "client", "192.0.2.9")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || strings.Contains(lines[0], "not_logged") || !strings.Contains(lines[1], "NOTIFY refused") ||
		!strings.Contains(lines[2], "not_logged_since_last=99") {
		t.Fatalf("logged:\n%s", buf.String())
	}
}
