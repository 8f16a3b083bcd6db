package peers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Past max_entries the follower closes the transfer instead of reading
// the rest: a primary sending without end is cut off.
func TestTransferClosedPastTheLimit(t *testing.T) {
	records := make([]string, 60000)
	for i := range records {
		records[i] = fmt.Sprintf("%d.%d.0.10 60 IN A 127.0.0.2", i%250, i/250)
	}
	p := startPrimary(t, "bl.mx2.example.org.", records...)
	cfg := peerConfig(p.addr)
	cfg.MaxEntries = 10
	f := NewFollower(cfg, newTestManager(t), nil, nil)
	f.Check(context.Background())
	if st := f.Status(); !strings.Contains(st.LastError, "max_entries") {
		t.Fatalf("status %+v, want a failure naming max_entries", st)
	}
	if err := p.lastOutErr(); err == nil {
		t.Errorf("the primary sent all %d records: the follower read the whole transfer past its limit", len(records))
	}
}

// The record bytes are bounded too: a few names with huge TXT records
// are refused.
func TestTransferBytesBounded(t *testing.T) {
	big := strings.Repeat(`"`+strings.Repeat("x", 255)+`" `, 200) // 51 KB
	p := startPrimary(t, "bl.mx2.example.org.",
		`7.113.0.203 60 IN A 127.0.0.2`, `7.113.0.203 60 IN TXT `+big,
		`8.113.0.203 60 IN A 127.0.0.2`, `8.113.0.203 60 IN TXT `+big)
	cfg := peerConfig(p.addr)
	cfg.MaxEntries = 2
	f := NewFollower(cfg, newTestManager(t), nil, nil)
	f.Check(context.Background())
	if st := f.Status(); !strings.Contains(st.LastError, "bytes") || st.HaveZone {
		t.Fatalf("status %+v, want a failure naming the byte bound", st)
	}
}

// A contact touches the saved zone (its age is the last contact after a
// restart) only when the file holds the zone in force: with a newer zone
// waiting to be saved, the older one must keep its age.
func TestSavedZoneNotTouchedWhileNewerWaits(t *testing.T) {
	p := startPrimary(t, "bl.mx2.example.org.", zoneV1[:2]...)
	dir := t.TempDir()
	f := NewFollower(peerConfig(p.addr), newTestManager(t), nil, nil)
	f.SetStateDir(dir)
	f.Check(context.Background()) // saves serial 1
	path := filepath.Join(dir, "mx2.zone")
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	p.set(2, zoneV1[:1]...)
	f.Check(context.Background()) // serial 2 waits: saved at most every saveEvery
	if st := f.Status(); st.Serial != 2 || f.unsaved == nil {
		t.Fatalf("status %+v, unsaved %v: want serial 2 waiting to be saved", st, f.unsaved != nil)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(old) {
		t.Errorf("the file holding serial 1 was touched (%s) while serial 2 waits to be saved", fi.ModTime())
	}
}

// A failed resolution of the primary holds for a while: a burst of
// NOTIFYs does not wait for the resolver once each.
func TestFailedPrimaryResolutionCached(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	f := NewFollower(peerConfig("ns.mx2.example.org:53"), nil, nil, func() time.Time { return now })
	lookups := 0
	f.lookupHost = func(context.Context, string) ([]netip.Addr, error) {
		lookups++
		return nil, errors.New("no such host")
	}
	for range 5 {
		if got := f.primaryAddrs(context.Background()); got != nil {
			t.Fatalf("addresses %v", got)
		}
	}
	if lookups != 1 {
		t.Fatalf("%d lookups for 5 NOTIFYs within %s, want 1", lookups, resolveFailureTTL)
	}
	now = now.Add(resolveFailureTTL)
	f.primaryAddrs(context.Background())
	if lookups != 2 {
		t.Fatalf("%d lookups after %s, want 2", lookups, resolveFailureTTL)
	}
}

// An IXFR over the limits (the differences can be larger than the zone:
// every name deleted and another added) falls back to an AXFR, which the
// same limits bound.
func TestIXFROverTheLimitFallsBackToAXFR(t *testing.T) {
	txt := `"` + strings.Repeat("x", 250) + `" `
	version := func(first int) []string {
		var rs []string
		for i := first; i < first+10; i++ {
			rs = append(rs, fmt.Sprintf("%d.113.0.203 60 IN A 127.0.0.2", i),
				fmt.Sprintf("%d.113.0.203 60 IN TXT %s", i, strings.Repeat(txt, 5))) // about 1.3 KB
		}
		return rs
	}
	p := startPrimary(t, "bl.mx2.example.org.", version(1)...)
	cfg := peerConfig(p.addr)
	cfg.MaxEntries = 10 // about 26 KB: one version fits, the differences of two do not
	f := NewFollower(cfg, newTestManager(t), nil, nil)
	f.Check(context.Background())
	if st := f.Status(); st.Serial != 1 || st.LastError != "" {
		t.Fatalf("first transfer: status %+v", st)
	}
	p.set(2, version(101)...)
	f.Check(context.Background())
	if st := f.Status(); st.Serial != 2 || st.LastError != "" {
		t.Errorf("status %+v, want serial 2 through an AXFR; primary saw %v", st, p.log())
	}
	if log := p.log(); len(log) < 2 || log[len(log)-2] != "IXFR 1" || log[len(log)-1] != "AXFR 2" {
		t.Errorf("primary saw %v, want an IXFR 1 then an AXFR 2", log)
	}
}
