package ban

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/mxguard/mxguard/actions/store"
)

// dryRunStore is the block list a dry run decides over: a memory copy of
// the real store that starts with its bans in force. The offence history
// (and the evidence lines of a copied ban) of a prefix are copied from the
// real store the first time the prefix is touched, so escalation is what
// the daemon's would be. The real store is only read, and nothing else
// writes it meanwhile (the daemon gives a dry run a private copy of the
// file, store.OpenCopy), so copying on first touch is the same as copying
// everything at start.
type dryRunStore struct {
	*store.Memory
	real Store

	mu     sync.Mutex
	copied map[netip.Prefix]bool
}

func newDryRunStore(real Store, now time.Time) (*dryRunStore, error) {
	recs, err := real.Active(now)
	if err != nil {
		return nil, fmt.Errorf("dry-run: read the active bans: %w", err)
	}
	d := &dryRunStore{Memory: store.NewMemory(), real: real, copied: map[netip.Prefix]bool{}}
	for _, r := range recs {
		d.Memory.Seed(r)
	}
	return d, nil
}

// touch copies what the real store knows of p, once.
func (d *dryRunStore) touch(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.copied[p] {
		return nil
	}
	h, ok, err := d.real.History(p)
	if err != nil {
		return fmt.Errorf("dry-run: %w", err)
	}
	if ok {
		d.Memory.SeedHistory(h)
	}
	real, ok, err := d.real.Get(p)
	if err != nil {
		return fmt.Errorf("dry-run: %w", err)
	}
	if mem, seeded, _ := d.Memory.Get(p); ok && seeded && len(mem.Lines) == 0 &&
		mem.Since.Equal(real.Since) && mem.Offence == real.Offence {
		mem.Lines = real.Lines
		d.Memory.Seed(mem)
	}
	d.copied[p] = true
	return nil
}

func (d *dryRunStore) Get(p netip.Prefix) (store.Record, bool, error) {
	if err := d.touch(p); err != nil {
		return store.Record{}, false, err
	}
	return d.Memory.Get(p)
}

func (d *dryRunStore) Put(r store.Record) error {
	if err := d.touch(r.Prefix); err != nil {
		return err
	}
	return d.Memory.Put(r)
}

func (d *dryRunStore) History(p netip.Prefix) (store.History, bool, error) {
	if err := d.touch(p); err != nil {
		return store.History{}, false, err
	}
	return d.Memory.History(p)
}
