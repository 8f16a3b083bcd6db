package ban

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// PeerDetectorPrefix starts the Detector of every ban mirrored from a peer
// ("peer:mx2"). Such a ban is enforced like any other, but it is this
// host's copy of another host's decision: it never escalates, is never
// written to the block list (the peer's zone is its source of truth, read
// again at every start), and must never be published again — a DNSBL
// publisher that republished it would echo a ban around the fleet after
// its owner lifted it.
const PeerDetectorPrefix = "peer:"

// PeerDetector is the Detector of the bans mirrored from peer name.
func PeerDetector(name string) string { return PeerDetectorPrefix + name }

// Mirrored reports whether b was learned from a peer (Detector peer:NAME).
func (b Ban) Mirrored() bool { return strings.HasPrefix(b.Detector, PeerDetectorPrefix) }

// MirrorEntry is one ban a peer lists: Until is already capped by the
// follower (the peer's own until, at most max_ban from now).
type MirrorEntry struct {
	Prefix netip.Prefix
	Reason string
	Until  time.Time
}

// MirrorOutcome is what Mirror did with one entry.
type MirrorOutcome int

// The outcomes of Mirror.
const (
	MirrorAdded       MirrorOutcome = iota // a new mirrored ban, in force
	MirrorRefreshed                        // its until (or reason) moved
	MirrorUnchanged                        // already mirrored as listed
	MirrorShadowed                         // recorded, but a local ban of the prefix is in force and wins
	MirrorAllowlisted                      // refused: overlaps the allowlist
	MirrorTooBroad                         // refused: broader than ban.max_prefix_v4/v6
	MirrorOver                             // its until is past: lifted if it was mirrored
)

func (o MirrorOutcome) String() string {
	switch o {
	case MirrorAdded:
		return "added"
	case MirrorRefreshed:
		return "refreshed"
	case MirrorUnchanged:
		return "unchanged"
	case MirrorShadowed:
		return "shadowed"
	case MirrorAllowlisted:
		return "allowlisted"
	case MirrorTooBroad:
		return "too_broad"
	case MirrorOver:
		return "over"
	}
	return fmt.Sprintf("MirrorOutcome(%d)", int(o))
}

// MirrorSyncResult counts what SyncMirror did.
type MirrorSyncResult struct {
	Added       int `json:"added"`
	Refreshed   int `json:"refreshed"`
	Unchanged   int `json:"unchanged"`
	Shadowed    int `json:"shadowed"`
	Allowlisted int `json:"allowlisted"`
	TooBroad    int `json:"too_broad"`
	Over        int `json:"over"`
	Lifted      int `json:"lifted"` // mirrored before, no longer listed
}

func (r *MirrorSyncResult) count(o MirrorOutcome) {
	switch o {
	case MirrorAdded:
		r.Added++
	case MirrorRefreshed:
		r.Refreshed++
	case MirrorUnchanged:
		r.Unchanged++
	case MirrorShadowed:
		r.Shadowed++
	case MirrorAllowlisted:
		r.Allowlisted++
	case MirrorTooBroad:
		r.TooBroad++
	case MirrorOver:
		r.Over++
	}
}

// mirrorBan is one peer's listing of a prefix. Several peers may list the
// same prefix; the one that lasts longest is in force.
type mirrorBan struct {
	source, reason string
	since, until   time.Time
}

// mirrorChunk bounds how many entries SyncMirror handles per hold of the
// decision lock, so that a 100k-entry zone does not stall local decisions.
const mirrorChunk = 2048

// Mirror puts in force a ban that peer source lists for prefix, until
// until. It applies the allowlist and the prefix limits like any ban, but
// counts no offence, writes nothing to the block list and never
// escalates. A local ban of the prefix in force wins: the mirror is
// recorded and takes over if the local ban ends first. An existing mirror
// of the same source keeps its until unless the new one is earlier, or
// later while the old one has less than refreshBelow left (so that a peer
// whose zone is read every minute does not rewrite every firewall entry
// every minute); refreshBelow 0 always takes the new until.
func (m *Manager) Mirror(_ context.Context, prefix netip.Prefix, source, reason string, until time.Time, refreshBelow time.Duration) (MirrorOutcome, error) {
	p, err := canon(prefix)
	if err != nil {
		return 0, fmt.Errorf("mirror from %s: %w", source, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mirrorLocked(p, source, reason, until, m.cfg.Now(), refreshBelow), nil
}

// Unmirror lifts source's mirrored ban of prefix (exactly that prefix). A
// local ban of the prefix, or another peer's listing, is left in force.
// It reports whether source had one.
func (m *Manager) Unmirror(_ context.Context, prefix netip.Prefix, source string) (bool, error) {
	p, err := canon(prefix)
	if err != nil {
		return false, fmt.Errorf("unmirror from %s: %w", source, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unmirrorLocked(p, source, m.cfg.Now()), nil
}

// SyncMirror makes source's mirrored bans exactly entries: each is
// mirrored (see Mirror), and every prefix source had mirrored that is not
// among them is lifted. It is what a follower calls after every transfer
// of the peer's zone.
func (m *Manager) SyncMirror(ctx context.Context, source string, entries []MirrorEntry, refreshBelow time.Duration) (MirrorSyncResult, error) {
	var res MirrorSyncResult
	listed := make(map[netip.Prefix]struct{}, len(entries))
	for i := 0; i < len(entries); i += mirrorChunk {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		chunk := entries[i:min(i+mirrorChunk, len(entries))]
		m.mu.Lock()
		now := m.cfg.Now()
		for _, e := range chunk {
			p, err := canon(e.Prefix)
			if err != nil {
				m.mu.Unlock()
				return res, fmt.Errorf("mirror from %s: %w", source, err)
			}
			listed[p] = struct{}{}
			res.count(m.mirrorLocked(p, source, e.Reason, e.Until, now, refreshBelow))
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	var gone []netip.Prefix
	for p, list := range m.mirrors {
		if _, ok := listed[p]; ok {
			continue
		}
		for _, mb := range list {
			if mb.source == source {
				gone = append(gone, p)
				break
			}
		}
	}
	for _, p := range gone {
		if m.unmirrorLocked(p, source, now) {
			res.Lifted++
		}
	}
	return res, nil
}

// mirrorLocked is Mirror with p canonical and m.mu held.
func (m *Manager) mirrorLocked(p netip.Prefix, source, reason string, until, now time.Time, refreshBelow time.Duration) MirrorOutcome {
	// The per-detector counters count changes only: a follower hands the
	// whole zone over at every check, and the refusals are its to count.
	if err := m.check(p); err != nil {
		m.unmirrorLocked(p, source, now) // the allowlist or the limits changed since
		if err == ErrAllowlisted {
			return MirrorAllowlisted
		}
		return MirrorTooBroad
	}
	if !until.After(now) {
		m.unmirrorLocked(p, source, now)
		return MirrorOver
	}
	list := m.mirrors[p]
	outcome := MirrorAdded
	found := false
	for i := range list {
		if list[i].source != source {
			continue
		}
		found = true
		old := list[i]
		if until.Before(old.until) || until.After(old.until) && old.until.Sub(now) < refreshBelow {
			list[i].until = until
		}
		list[i].reason = reason
		outcome = MirrorUnchanged
		if !list[i].until.Equal(old.until) || reason != old.reason {
			outcome = MirrorRefreshed
		}
		break
	}
	if !found {
		list = append(list, mirrorBan{source: source, reason: reason, since: now, until: until})
		m.mirrors[p] = list
	}
	switch outcome {
	case MirrorAdded:
		st := m.stats(PeerDetector(source))
		st.Decisions++
		st.Bans++
	case MirrorRefreshed:
		st := m.stats(PeerDetector(source))
		st.Decisions++
		st.Extended++
	}
	if cur, ok := m.index.get(p); ok && cur.Active(now) && !cur.Mirrored() {
		return MirrorShadowed // a local ban wins
	}
	m.putMirrorInForce(p, now)
	return outcome
}

// putMirrorInForce makes the longest-lasting mirror of p the index's ban
// of p and applies it if that changed anything; m.mu is held and no local
// ban of p is in force. It reports whether a mirror is in force.
func (m *Manager) putMirrorInForce(p netip.Prefix, now time.Time) bool {
	best, ok := m.bestMirror(p, now)
	if !ok {
		return false
	}
	b := m.mirrorBanOf(p, best)
	cur, had := m.index.get(p)
	if had && cur.Active(now) && cur.Detector == b.Detector && cur.Reason == b.Reason && cur.Until.Equal(b.Until) {
		return true
	}
	m.index.set(b)
	if !had || !cur.Active(now) || !cur.Mirrored() {
		m.notifyBan(b)
		m.logDecision("ban mirrored", "would mirror ban", "ip", p, "detector", b.Detector, "reason", b.Reason, "until", b.Until)
	}
	m.enqueueApply(b)
	return true
}

// bestMirror is the mirror of p in force at now that lasts longest.
func (m *Manager) bestMirror(p netip.Prefix, now time.Time) (mirrorBan, bool) {
	var best mirrorBan
	ok := false
	for _, mb := range m.mirrors[p] {
		if mb.until.After(now) && (!ok || mb.until.After(best.until)) {
			best, ok = mb, true
		}
	}
	return best, ok
}

func (m *Manager) mirrorBanOf(p netip.Prefix, mb mirrorBan) Ban {
	return Ban{Prefix: p, Detector: PeerDetector(mb.source), Reason: mb.reason,
		Since: mb.since, Until: mb.until, DryRun: m.cfg.DryRun}
}

// unmirrorLocked drops source's mirror of p; if that was the ban in force,
// another peer's mirror takes its place or the ban is lifted. A local ban
// is never touched. m.mu is held.
func (m *Manager) unmirrorLocked(p netip.Prefix, source string, now time.Time) bool {
	list := m.mirrors[p]
	i := -1
	for j := range list {
		if list[j].source == source {
			i = j
			break
		}
	}
	if i < 0 {
		return false
	}
	list = append(list[:i], list[i+1:]...)
	if len(list) == 0 {
		delete(m.mirrors, p)
	} else {
		m.mirrors[p] = list
	}
	if cur, ok := m.index.get(p); ok && cur.Detector == PeerDetector(source) {
		m.mirrorGone(p, now)
	}
	return true
}

// mirrorGone follows the end of the mirror in force for p: the next peer's
// takes over, or the ban is lifted. m.mu is held.
func (m *Manager) mirrorGone(p netip.Prefix, now time.Time) {
	if m.putMirrorInForce(p, now) {
		return
	}
	m.index.remove(p)
	m.logDecision("mirrored ban lifted", "would lift mirrored ban", "ip", p)
	m.enqueueRevoke(p)
}

// localGone follows the end of a local ban of p (expiry): a peer's mirror
// still in force takes over instead of a revoke; if the index already
// holds a mirror (the local ban was over before it was swept), it stays.
// m.mu is held.
func (m *Manager) localGone(p netip.Prefix, now time.Time) {
	if cur, ok := m.index.get(p); ok && cur.Mirrored() {
		return
	}
	if m.check(p) == nil && m.putMirrorInForce(p, now) {
		return
	}
	m.index.remove(p)
	m.enqueueRevoke(p)
}

// expireMirrors drops the mirrors over at now (a peer that stopped
// answering: its bans last at most max_ban after the last transfer).
// m.mu is held.
func (m *Manager) expireMirrors(now time.Time) int {
	n := 0
	for p, list := range m.mirrors {
		var over []string
		for _, mb := range list {
			if !mb.until.After(now) {
				over = append(over, mb.source)
			}
		}
		for _, src := range over {
			if m.unmirrorLocked(p, src, now) {
				n++
			}
		}
	}
	return n
}

// recheckMirrors drops the mirrors the allowlist or the prefix limits no
// longer allow, in force or shadowed by a local ban. m.mu is held.
func (m *Manager) recheckMirrors(now time.Time) int {
	n := 0
	for p, list := range m.mirrors {
		if m.check(p) == nil {
			continue
		}
		for _, src := range sourcesOf(list) {
			if m.unmirrorLocked(p, src, now) {
				n++
			}
		}
	}
	return n
}

func sourcesOf(list []mirrorBan) []string {
	out := make([]string, len(list))
	for i, mb := range list {
		out[i] = mb.source
	}
	return out
}

// mirrorsOf returns every peer's listing of exactly p, in force at now.
// m.mu is held.
func (m *Manager) mirrorsOf(p netip.Prefix, now time.Time) []Ban {
	var out []Ban
	for _, mb := range m.mirrors[p] {
		if mb.until.After(now) {
			out = append(out, m.mirrorBanOf(p, mb))
		}
	}
	return out
}

// mirrorCounts counts the mirrored bans in force at now per peer (shadowed
// ones included). m.mu is held.
func (m *Manager) mirrorCounts(now time.Time) map[string]int {
	if len(m.mirrors) == 0 {
		return nil
	}
	out := map[string]int{}
	for _, list := range m.mirrors {
		for _, mb := range list {
			if mb.until.After(now) {
				out[mb.source]++
			}
		}
	}
	return out
}
