package daemon

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/pipeline"
	"github.com/mxguard/mxguard/internal/tailer"
)

// refusingStore refuses writes of some prefixes (a full disk, per prefix).
type refusingStore struct {
	*committingStore
	refuse map[netip.Prefix]bool
}

func (s *refusingStore) Put(r store.Record) error {
	if s.refuse[r.Prefix] {
		return errors.New("no space left on device")
	}
	return s.committingStore.Put(r)
}

func TestHeldCheckpointNotBypassedBySavedPosition(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	l1, l2, l3 := pipeliningLine("203.0.113.1"), pipeliningLine("203.0.113.2"), pipeliningLine("203.0.113.3")
	if err := os.WriteFile(logPath, []byte(l1+"\n"+l2+"\n"+l3+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cp, err := tailer.NewBoltCheckpoints(st.DB())
	if err != nil {
		t.Fatal(err)
	}
	fol, err := tailer.New(tailer.Config{Paths: []string{logPath}, FromStart: true, CheckpointEvery: time.Hour}, cp)
	if err != nil {
		t.Fatal(err)
	}
	cs := &committingStore{Store: st, follower: fol}
	rs := &refusingStore{committingStore: cs, refuse: map[netip.Prefix]bool{
		netip.MustParsePrefix("203.0.113.1/32"): true, netip.MustParsePrefix("203.0.113.2/32"): true}}
	cfg := config.Default()
	mgr, err := ban.NewManager(ban.ManagerConfig{Ban: cfg.Ban, PersistQueueMax: 1, RetryBase: time.Hour, RetryMax: time.Hour}, rs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	det, err := detectors.New(cfg.Detectors, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(det, &committingDecider{mgr: mgr, st: cs}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Follow(ctx, fol, time.Local) }()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Lines < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	ps := p.Stats()
	t.Logf("stats: lines=%d not_recorded=%d awaiting=%d held=%d", ps.Lines, ps.NotRecorded, ps.AwaitingRedecision, ps.HeldPaths)
	pos, ok, err := cp.LoadPosition(logPath)
	if err != nil || !ok {
		t.Fatalf("position: %v %v", ok, err)
	}
	end1 := int64(len(l1) + 1)
	t.Logf("saved offset %d; end of line 1 (lost decision on line 2) = %d; end of line 3 = %d", pos.Offset, end1, len(l1)+len(l2)+len(l3)+3)
	if ps.NotRecorded != 1 {
		t.Fatalf("setup: not recorded = %d, want 1", ps.NotRecorded)
	}
	if pos.Offset > end1 {
		t.Errorf("checkpoint saved past the line whose decision was neither recorded nor queued (offset %d > %d): a restart loses it", pos.Offset, end1)
	}
	_ = strings.TrimSpace
}
