package ban

import (
	"net/netip"
	"time"
)

// Index is the Manager's longest-prefix ban index for a front door that
// keeps a set of bans of its own: the DNSBL publisher holds only the bans
// it publishes (no dry-run or mirrored ones), and must change that set in
// step with its zone serial, so it cannot ask the Manager's index. Safe for
// concurrent use; lookups allocate nothing.
type Index struct{ x *banIndex }

// NewIndex returns an empty index.
func NewIndex() *Index { return &Index{x: newBanIndex()} }

// Set adds or replaces the ban of b.Prefix, which must be canonical
// (masked, IPv4 unmapped; see CheckPrefix).
func (i *Index) Set(b Ban) { i.x.set(b) }

// Remove drops the ban of exactly p, if any.
func (i *Index) Remove(p netip.Prefix) { i.x.remove(p) }

// Replace makes bans the whole content.
func (i *Index) Replace(bans []Ban) { i.x.replace(bans) }

// Get returns the ban of exactly p, in force or not.
func (i *Index) Get(p netip.Prefix) (Ban, bool) { return i.x.get(p) }

// Lookup returns the ban in force at now of the longest prefix containing a.
func (i *Index) Lookup(a netip.Addr, now time.Time) (Ban, bool) { return i.x.lookup(a, now, false) }

// Len returns how many bans the index holds, in force or not.
func (i *Index) Len() int {
	i.x.mu.RLock()
	defer i.x.mu.RUnlock()
	return i.x.live
}
