package ban

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var ctxBG = context.Background()

// listed returns the detector and until of exactly p in List, if any.
func listed(t *testing.T, m *Manager, now time.Time, p string) (Ban, bool) {
	t.Helper()
	bans, err := m.List(now)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bans {
		if b.Prefix == netip.MustParsePrefix(p) {
			return b, true
		}
	}
	return Ban{}, false
}

func TestMirrorRefusesWhatAnyBanWouldBeRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix string
		until  time.Duration
		want   MirrorOutcome
	}{
		{"allowlisted address", "192.0.2.5/32", time.Hour, MirrorAllowlisted},
		{"prefix overlapping the allowlist", "192.0.2.0/24", time.Hour, MirrorAllowlisted},
		{"v4 broader than max_prefix_v4", "198.51.0.0/16", time.Hour, MirrorTooBroad},
		{"v6 broader than max_prefix_v6", "2001:db8::/32", time.Hour, MirrorTooBroad},
		{"until already past", "203.0.113.7/32", -time.Minute, MirrorOver},
		{"a /24 is fine", "203.0.113.0/24", time.Hour, MirrorAdded},
		{"a v6 /48 is fine", "2001:db8:1::/48", time.Hour, MirrorAdded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &managerFake{name: "fw"}
			env := managerNew(t, ManagerConfig{Allowlist: []string{"192.0.2.5"}}, f)
			got, err := env.m.Mirror(ctxBG, netip.MustParsePrefix(tc.prefix), "mx2", "dictionary: 5 unknown recipients", t0.Add(tc.until), 0)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("outcome %v, want %v", got, tc.want)
			}
			env.flush(t)
			applied, _, _ := f.calls()
			_, inList := listed(t, env.m, t0, tc.prefix)
			if banned := tc.want == MirrorAdded; inList != banned || (len(applied) == 1) != banned {
				t.Fatalf("listed %v, applied %v; want banned=%v", inList, applied, banned)
			}
		})
	}
}

func TestMirrorCountsNoOffenceAndIsNotStored(t *testing.T) {
	f := &managerFake{name: "fw"}
	env := managerNew(t, ManagerConfig{}, f)
	p := netip.MustParsePrefix("203.0.113.7/32")
	if o, err := env.m.Mirror(ctxBG, p, "mx2", "dictionary: 5 unknown recipients", t0.Add(24*time.Hour), 0); err != nil || o != MirrorAdded {
		t.Fatalf("Mirror = %v, %v", o, err)
	}
	b, ok := listed(t, env.m, t0, "203.0.113.7/32")
	if !ok || b.Detector != "peer:mx2" || b.Offence != 0 || !b.Until.Equal(t0.Add(24*time.Hour)) || !b.Mirrored() {
		t.Fatalf("listed %+v, %v; want a peer:mx2 ban without offence until +24h", b, ok)
	}
	if _, ok := env.m.Banned(p.Addr()); !ok {
		t.Fatal("Banned: the mirrored ban is not enforced")
	}
	if h, ok, _ := env.store.History(p); ok {
		t.Fatalf("history %+v: a mirrored ban must not count as an offence", h)
	}
	if recs, _ := env.store.Active(t0); len(recs) != 0 {
		t.Fatalf("store holds %v: a mirrored ban must not be written", recs)
	}
	if l, _ := env.store.Ledger(p, 10); len(l) != 0 {
		t.Fatalf("ledger %v: a mirrored ban must not be written", l)
	}
	// A local decision on the same address is a first offence.
	lb, ok, err := env.m.Decide(ctxBG, managerDec("203.0.113.7", t0))
	if err != nil || !ok || lb.Offence != 1 || lb.Detector != "dictionary" {
		t.Fatalf("Decide = %+v, %v, %v; want a first local offence", lb, ok, err)
	}
	ex, err := env.m.Explain(p)
	if err != nil {
		t.Fatal(err)
	}
	if !ex.Banned || len(ex.Peers) != 1 || ex.Peers[0].Detector != "peer:mx2" || ex.Record == nil || ex.Record.Detector != "dictionary" {
		t.Fatalf("Explain = %+v; want the local record and the peer's listing", ex)
	}
	st, _ := env.m.Status()
	if st.Mirrored["mx2"] != 1 || st.Detectors["peer:mx2"].Bans != 1 {
		t.Fatalf("status mirrored %v, detectors %v", st.Mirrored, st.Detectors)
	}
}

func TestLocalBanWinsOverMirror(t *testing.T) {
	f := &managerFake{name: "fw"}
	env := managerNew(t, ManagerConfig{}, f)
	p := netip.MustParsePrefix("203.0.113.0/24")
	local, err := env.m.Ban(ctxBG, p, 2*time.Hour, "spam run")
	if err != nil {
		t.Fatal(err)
	}
	o, err := env.m.Mirror(ctxBG, p, "mx2", "peer says", t0.Add(24*time.Hour), 0)
	if err != nil || o != MirrorShadowed {
		t.Fatalf("Mirror over a local ban = %v, %v; want shadowed", o, err)
	}
	if b, _ := listed(t, env.m, t0, "203.0.113.0/24"); b.Detector != DetectorManual || !b.Until.Equal(local.Until) {
		t.Fatalf("listed %+v; the local ban must stay as it was", b)
	}
	// The peer drops it: the local ban stays, nothing is revoked.
	if res, err := env.m.SyncMirror(ctxBG, "mx2", nil, 0); err != nil || res.Lifted != 1 {
		t.Fatalf("SyncMirror(empty) = %+v, %v", res, err)
	}
	env.flush(t)
	if _, revoked, _ := f.calls(); len(revoked) != 0 {
		t.Fatalf("revoked %v: a peer's removal must never lift a local ban", revoked)
	}
	if b, ok := listed(t, env.m, t0, "203.0.113.0/24"); !ok || b.Detector != DetectorManual {
		t.Fatalf("after the peer's removal: %+v, %v", b, ok)
	}
	// Listed again; the local ban expires first: the mirror takes over.
	if _, err := env.m.Mirror(ctxBG, p, "mx2", "peer says", t0.Add(24*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(3 * time.Hour)
	env.clock.Set(later)
	if _, err := env.m.Expire(ctxBG, later); err != nil {
		t.Fatal(err)
	}
	env.flush(t)
	b, ok := listed(t, env.m, later, "203.0.113.0/24")
	if !ok || b.Detector != "peer:mx2" {
		t.Fatalf("after the local ban expired: %+v, %v; want the mirror in force", b, ok)
	}
	applied, revoked, _ := f.calls()
	if len(revoked) != 0 || applied[len(applied)-1].Detector != "peer:mx2" {
		t.Fatalf("applied %v, revoked %v: want the mirror applied, nothing revoked", applied, revoked)
	}
}

func TestLongerLocalBanIsNotOverwritten(t *testing.T) {
	env := managerNew(t, ManagerConfig{}, &managerFake{name: "fw"})
	p := netip.MustParsePrefix("198.51.100.9/32")
	local, err := env.m.Ban(ctxBG, p, 7*24*time.Hour, "known spammer")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := env.m.Mirror(ctxBG, p, "mx2", "peer says", t0.Add(time.Hour), 0); o != MirrorShadowed {
		t.Fatalf("outcome %v, want shadowed", o)
	}
	env.clock.Set(t0.Add(2 * time.Hour))
	if _, err := env.m.Expire(ctxBG, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	b, ok := listed(t, env.m, t0.Add(2*time.Hour), "198.51.100.9/32")
	if !ok || b.Detector != DetectorManual || !b.Until.Equal(local.Until) {
		t.Fatalf("after the mirror's until: %+v, %v; want the local 7d ban", b, ok)
	}
}

func TestMirrorRemovalLiftsOnlyThatPeersBan(t *testing.T) {
	f := &managerFake{name: "fw"}
	env := managerNew(t, ManagerConfig{}, f)
	a := netip.MustParsePrefix("203.0.113.1/32")
	b := netip.MustParsePrefix("203.0.113.2/32")
	both := netip.MustParsePrefix("203.0.113.3/32")
	entries := func(ps ...netip.Prefix) []MirrorEntry {
		var out []MirrorEntry
		for _, p := range ps {
			out = append(out, MirrorEntry{Prefix: p, Reason: "listed", Until: t0.Add(12 * time.Hour)})
		}
		return out
	}
	if _, err := env.m.SyncMirror(ctxBG, "mx2", entries(a, both), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := env.m.SyncMirror(ctxBG, "mx3", []MirrorEntry{{Prefix: b, Reason: "x", Until: t0.Add(6 * time.Hour)},
		{Prefix: both, Reason: "x", Until: t0.Add(6 * time.Hour)}}, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := listed(t, env.m, t0, "203.0.113.3/32"); got.Detector != "peer:mx2" {
		t.Fatalf("both list it: %+v; want the longer (mx2) in force", got)
	}
	// mx2 drops everything: a goes, both falls back to mx3, b (mx3's) stays.
	res, err := env.m.SyncMirror(ctxBG, "mx2", nil, 0)
	if err != nil || res.Lifted != 2 {
		t.Fatalf("SyncMirror = %+v, %v", res, err)
	}
	env.flush(t)
	if _, ok := listed(t, env.m, t0, "203.0.113.1/32"); ok {
		t.Fatal("a is still banned after its only peer dropped it")
	}
	if got, ok := listed(t, env.m, t0, "203.0.113.3/32"); !ok || got.Detector != "peer:mx3" || !got.Until.Equal(t0.Add(6*time.Hour)) {
		t.Fatalf("both: %+v, %v; want mx3's listing in force", got, ok)
	}
	if _, ok := listed(t, env.m, t0, "203.0.113.2/32"); !ok {
		t.Fatal("b (mx3's) was lifted by mx2's removal")
	}
	_, revoked, _ := f.calls()
	if !slices.Equal(revoked, []netip.Prefix{a}) {
		t.Fatalf("revoked %v, want only %v", revoked, a)
	}
	// Unmirror of a prefix the source never listed does nothing.
	if ok, _ := env.m.Unmirror(ctxBG, b, "mx2"); ok {
		t.Fatal("Unmirror reported a ban mx2 never listed")
	}
}

func TestMirrorExpiresAndRefreshes(t *testing.T) {
	f := &managerFake{name: "fw"}
	env := managerNew(t, ManagerConfig{}, f)
	p := netip.MustParsePrefix("203.0.113.7/32")
	const maxBan = 24 * time.Hour
	refreshBelow := maxBan / 2
	if _, err := env.m.Mirror(ctxBG, p, "mx2", "r", t0.Add(maxBan), refreshBelow); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		at        time.Duration // clock, from t0
		until     time.Duration // the follower's capped until, from t0
		want      MirrorOutcome
		wantUntil time.Duration
	}{
		{time.Hour, time.Hour + maxBan, MirrorUnchanged, maxBan},                 // plenty left: no rewrite
		{13 * time.Hour, 13*time.Hour + maxBan, MirrorRefreshed, 37 * time.Hour}, // under half left: refreshed
		{14 * time.Hour, 20 * time.Hour, MirrorRefreshed, 20 * time.Hour},        // the peer shortened it
	} {
		env.clock.Set(t0.Add(step.at))
		got, err := env.m.Mirror(ctxBG, p, "mx2", "r", t0.Add(step.until), refreshBelow)
		if err != nil || got != step.want {
			t.Fatalf("at +%s: %v, %v; want %v", step.at, got, err, step.want)
		}
		if b, _ := listed(t, env.m, t0.Add(step.at), "203.0.113.7/32"); !b.Until.Equal(t0.Add(step.wantUntil)) {
			t.Fatalf("at +%s: until %s, want +%s", step.at, b.Until, step.wantUntil)
		}
	}
	// The peer falls silent: the mirror ends at its until.
	end := t0.Add(20*time.Hour + time.Second)
	env.clock.Set(end)
	if n, err := env.m.Expire(ctxBG, end); err != nil || n != 1 {
		t.Fatalf("Expire = %d, %v", n, err)
	}
	env.flush(t)
	if _, revoked, _ := f.calls(); !slices.Equal(revoked, []netip.Prefix{p}) {
		t.Fatalf("revoked %v", revoked)
	}
	if st, _ := env.m.Status(); len(st.Mirrored) != 0 {
		t.Fatalf("status still counts %v", st.Mirrored)
	}
}

func TestRecheckLiftsMirrorsTheAllowlistNowCovers(t *testing.T) {
	var extra []netip.Prefix
	f := &managerFake{name: "fw"}
	env := managerNew(t, ManagerConfig{AllowSources: []func() ([]netip.Prefix, error){
		func() ([]netip.Prefix, error) { return extra, nil }}}, f)
	p := netip.MustParsePrefix("203.0.113.7/32")
	shadowed := netip.MustParsePrefix("203.0.113.8/32")
	if _, err := env.m.Mirror(ctxBG, p, "mx2", "r", t0.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := env.m.Ban(ctxBG, shadowed, 10*time.Minute, "local"); err != nil {
		t.Fatal(err)
	}
	if o, _ := env.m.Mirror(ctxBG, shadowed, "mx2", "r", t0.Add(time.Hour), 0); o != MirrorShadowed {
		t.Fatalf("outcome %v", o)
	}
	extra = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/28")}
	if _, err := env.m.Recheck(ctxBG); err != nil {
		t.Fatal(err)
	}
	if bans, _ := env.m.List(t0); len(bans) != 0 {
		t.Fatalf("after the allowlist grew: %v", bans)
	}
	if st, _ := env.m.Status(); len(st.Mirrored) != 0 {
		t.Fatalf("mirrors left: %v (a shadowed one would come back when the local ban ends)", st.Mirrored)
	}
}
