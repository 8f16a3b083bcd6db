package ban

import (
	"sync"
)

// banSubscribers are the functions told of every ban put in force.
type banSubscribers struct {
	mu   sync.Mutex
	next uint64
	fns  map[uint64]func(Ban)
}

// OnBan calls fn with every ban the Manager puts in force from now on: a
// new ban or an extension, from a detector, a manual ban or any other
// decision, in dry-run too (marked DryRun, as Banned reports them). It is
// how front doors end the live sessions of a client banned meanwhile (a
// connect-time check sees only new connections).
//
// fn runs synchronously inside the decision, with the Manager's decision
// lock held: it must be quick, must not block, and must not call back into
// the Manager. The returned function unsubscribes fn.
func (m *Manager) OnBan(fn func(Ban)) (cancel func()) {
	s := &m.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[uint64]func(Ban){}
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.fns, id)
		s.mu.Unlock()
	}
}

// notifyBan tells the subscribers of b, if it is in force now (a decision
// from an old log line may be over already).
func (m *Manager) notifyBan(b Ban) {
	if !b.Active(m.cfg.Now()) {
		return
	}
	s := &m.subs
	s.mu.Lock()
	fns := make([]func(Ban), 0, len(s.fns))
	for _, fn := range s.fns {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(b)
	}
}
