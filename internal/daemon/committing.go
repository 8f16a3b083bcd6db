package daemon

import (
	"context"
	"net/netip"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/store"
	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/pipeline"
	"github.com/mxguard/mxguard/internal/tailer"
)

// committingStore is the block list as the daemon's Manager writes it: a
// ban decided for a log line is stored in one transaction with the read
// position just after that line (tailer.Follower.AckWith). Lines up to a
// stored decision are then never decided again after a crash, and a
// decision is never lost: the position cannot be saved without it.
type committingStore struct {
	*store.Store
	follower lineAcker // nil: no logs followed

	mu   sync.Mutex
	mark *decisionMark // set by committingDecider while it decides
}

// lineAcker saves a line's read position in the consumer's transaction
// (tailer.Follower.AckWith, journal.Follower.AckWith).
type lineAcker interface {
	AckWith(l tailer.Line, commit func(save func(*bolt.Tx) error) error) error
}

// decisionMark is the log line a decision being taken comes from.
type decisionMark struct {
	prefix netip.Prefix
	line   tailer.Line
}

// Put stores r, with the line of the decision being taken when r is its
// ban (same prefix: a manual ban of another prefix at the same moment is
// not that decision's).
func (s *committingStore) Put(r store.Record) error {
	s.mu.Lock()
	m := s.mark
	if m != nil && m.prefix == r.Prefix {
		s.mark = nil
	} else {
		m = nil
	}
	s.mu.Unlock()
	if m == nil || s.follower == nil {
		return s.Store.Put(r)
	}
	return s.follower.AckWith(m.line, func(save func(*bolt.Tx) error) error {
		return s.Store.PutWith(r, save)
	})
}

func (s *committingStore) setMark(m *decisionMark) {
	s.mu.Lock()
	s.mark = m
	s.mu.Unlock()
}

// committingDecider is the pipeline's Decider in the daemon: it tells the
// store which log line each decision comes from. Decisions are taken one
// at a time (the Manager serialises them anyway), so the store cannot take
// one decision's ban for another's.
type committingDecider struct {
	mgr *ban.Manager
	st  *committingStore
	mu  sync.Mutex
}

func (c *committingDecider) Decide(ctx context.Context, d detectors.Decision) (ban.Ban, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := pipeline.DecisionLine(ctx); ok {
		// Detectors decide for unmapped, masked prefixes: as stored.
		c.st.setMark(&decisionMark{prefix: d.Prefix, line: l})
		defer c.st.setMark(nil)
	}
	return c.mgr.Decide(ctx, d)
}
