package peers

import (
	"context"
	"log/slog"
	"sync"
)

// Set runs the followers of every configured peer and their NOTIFY
// listeners.
type Set struct {
	followers []*Follower
	notifiers []*notifyServer
	log       *slog.Logger
	wg        sync.WaitGroup
	cancel    context.CancelFunc
}

// NewSet makes the followers of cfgs (validated); nothing runs yet. Each
// keeps its copy of the zone in stateDir ("" keeps none).
func NewSet(cfgs []Config, stateDir string, m Mirrorer, logger *slog.Logger) *Set {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Set{log: logger}
	byAddr := map[string][]*Follower{}
	var addrs []string
	for _, c := range cfgs {
		f := NewFollower(c, m, logger, nil)
		f.SetStateDir(stateDir)
		s.followers = append(s.followers, f)
		if c.NotifyListen != "" {
			if byAddr[c.NotifyListen] == nil {
				addrs = append(addrs, c.NotifyListen)
			}
			byAddr[c.NotifyListen] = append(byAddr[c.NotifyListen], f)
		}
	}
	for _, a := range addrs {
		s.notifiers = append(s.notifiers, newNotifyServer(a, byAddr[a], logger))
	}
	return s
}

// Start binds the NOTIFY listeners (an address that cannot be bound is an
// error) and starts every follower; they stop when ctx is done or Close.
func (s *Set) Start(ctx context.Context) error {
	for i, n := range s.notifiers {
		if err := n.listen(); err != nil {
			for _, o := range s.notifiers[:i] {
				o.closeSockets()
			}
			return err
		}
	}
	ctx, s.cancel = context.WithCancel(ctx)
	for _, n := range s.notifiers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := n.serve(); err != nil && ctx.Err() == nil {
				s.log.Error("peers NOTIFY listener stopped", "addr", n.addr, "err", err)
			}
		}()
	}
	for _, f := range s.followers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = f.Run(ctx)
		}()
	}
	s.log.Info("following peers", "peers", len(s.followers), "notify_listeners", len(s.notifiers))
	return nil
}

// Close stops the followers and the listeners and waits for them.
func (s *Set) Close() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	for _, n := range s.notifiers {
		n.shutdown()
	}
	s.wg.Wait()
	return nil
}

// Status is every peer's state, in the order of the config.
func (s *Set) Status() []Status {
	out := make([]Status, len(s.followers))
	for i, f := range s.followers {
		out[i] = f.Status()
	}
	return out
}

// NotifyRefused counts the NOTIFYs refused on every listener.
func (s *Set) NotifyRefused() uint64 {
	var n uint64
	for _, ns := range s.notifiers {
		n += ns.refused.Load()
	}
	return n
}
