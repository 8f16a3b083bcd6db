package ban

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/store"
)

// orderedAction records its calls in order; Sync waits for release.
type orderedAction struct {
	release chan struct{}
	syncing chan struct{}
	once    sync.Once
	mu      sync.Mutex
	calls   []string
}

func (a *orderedAction) Name() string { return "ordered" }
func (a *orderedAction) Close() error { return nil }

func (a *orderedAction) note(s string) {
	a.mu.Lock()
	a.calls = append(a.calls, s)
	a.mu.Unlock()
}

func (a *orderedAction) Sync(ctx context.Context, active []Ban) error {
	a.once.Do(func() { close(a.syncing) })
	select {
	case <-a.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, b := range active {
		a.note("sync " + b.Prefix.String())
	}
	return nil
}

func (a *orderedAction) Apply(_ context.Context, b Ban) error {
	a.note("apply " + b.Prefix.String())
	return nil
}

func (a *orderedAction) Revoke(_ context.Context, p netip.Prefix) error {
	a.note("revoke " + p.String())
	return nil
}

// Restore may run beside decisions (the daemon runs it in the
// background): a ban decided and one lifted while an action's Sync is
// busy reach the action after the Sync, so the Sync's older picture never
// has the last word.
func TestManagerDecisionsDuringRestoreFollowTheSync(t *testing.T) {
	a := &orderedAction{release: make(chan struct{}), syncing: make(chan struct{})}
	st := openStore(t, "")
	for _, r := range []store.Record{
		rec("198.51.100.1/32", t0.Add(-time.Minute), time.Hour),
		rec("198.51.100.2/32", t0.Add(-time.Minute), time.Hour),
	} {
		if err := st.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	m, err := NewManager(ManagerConfig{Now: func() time.Time { return t0 }, AllowSources: []func() ([]netip.Prefix, error){}},
		st, []Action{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	restored := make(chan error, 1)
	go func() { restored <- m.Restore(context.Background()) }()
	<-a.syncing
	ctx := context.Background()
	if _, ok, err := m.Decide(ctx, managerDec("203.0.113.9", t0)); !ok || err != nil {
		t.Fatalf("Decide during the sync: %v %v", ok, err)
	}
	if _, err := m.Unban(ctx, netip.MustParsePrefix("198.51.100.2/32")); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.Status(); st.ActiveBans != 2 {
		t.Errorf("status during the sync: %d active bans, want 2", st.ActiveBans)
	}
	close(a.release)
	if err := <-restored; err != nil {
		t.Fatalf("Restore: %v", err)
	}
	managerWait(t, "the apply and the revoke", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.calls) == 4
	})
	a.mu.Lock()
	got := slices.Clone(a.calls)
	a.mu.Unlock()
	syncs, rest := got[:2], got[2:]
	slices.Sort(rest)
	if !slices.Equal(syncs, []string{"sync 198.51.100.1/32", "sync 198.51.100.2/32"}) ||
		!slices.Equal(rest, []string{"apply 203.0.113.9/32", "revoke 198.51.100.2/32"}) {
		t.Errorf("calls %q: want the sync of the two old bans, then the apply and the revoke", got)
	}
}
