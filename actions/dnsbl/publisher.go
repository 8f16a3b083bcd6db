// Package dnsbl publishes mxguard's bans as a DNSBL zone (RFC 5782) served
// by mxguard itself: the Publisher is a ban.Action, so it sees every ban,
// extension, unban and expiry the firewall backends see, and a DNS server
// answering queries, AXFR and IXFR (TSIG-signed, to the configured
// secondaries only), sending NOTIFY on change. Bans from dry runs and bans
// mirrored from peers (detector "peer:NAME") are never published.
package dnsbl

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/dnsserve"
	"github.com/mxguard/mxguard/internal/ratelog"
)

// Options are the wiring of a Publisher.
type Options struct {
	Logger *slog.Logger
	// SerialFile keeps the serial high-water mark across restarts; ""
	// keeps none (the serial then starts from the clock).
	SerialFile string
	// MaxPrefixV4 and MaxPrefixV6 are ban.max_prefix_v4/v6: no ban is
	// broader, which bounds what one change re-renders (0: 24 and 48).
	MaxPrefixV4, MaxPrefixV6 int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Publisher is the DNSBL action and server. Safe for concurrent use.
type Publisher struct {
	cfg     Config
	zone    string // fully qualified, lower case
	log     *slog.Logger
	now     func() time.Time
	codes   map[string]dns.A
	dets    map[string]bool // nil: every detector
	ttl     uint32
	soa     dns.SOA // Serial filled in per answer
	ns      dns.NS
	secs    []secondary
	allowed map[netip.Addr]bool // may transfer
	tsigKey map[string]string   // name → secret, for dns.Server and Client
	reg4    int                 // region widths (bits)
	reg6    int
	serials *serialKeeper
	limiter *rateLimiter
	refusal *ratelog.Log // refused transfers, logged at most every 10 s
	stats   counters

	mu    sync.RWMutex
	index *ban.Index
	// regions holds the listings by region (a slice: most regions hold
	// one, and a map of one entry costs ten times as much).
	regions map[netip.Prefix][]ban.Ban
	// placeholderNodes caches, per region, the IPv4 prefixes whose names
	// have placeholder names below them (as rendering makes them): filled
	// by the first query after a change of the region (under the read
	// lock, so also guarded by phMu), dropped by applyLocked.
	phMu             sync.Mutex
	placeholderNodes map[netip.Prefix]map[netip.Prefix]struct{}
	count            int // listings, test entries included
	// v6Paths counts the IPv6 listings below each IPv6 prefix of one to
	// four nibbles: those names are also IPv4 names when the nibbles are
	// digits (1.0.0.2 is 2.0.0.1 and 2001::/16), and such a name exists
	// (NODATA, not NXDOMAIN) while IPv6 listings are below it.
	v6Paths    map[netip.Prefix]int
	serial     uint32
	journal    []journalEntry
	journalRRs int
	expiry     expiryHeap

	reasonsMu sync.Mutex
	reasons   map[string]string // reason → shortReason(reason)

	changed  chan struct{} // a change to notify about (buffer 1)
	expWake  chan struct{}
	servers  []*dns.Server
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	startMu  sync.Mutex
	started  bool
	closeErr error
	closed   bool
}

// New builds a Publisher from a validated, enabled cfg. Nothing listens
// until Start.
func New(cfg Config, opts Options) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxPrefixV4 <= 0 {
		opts.MaxPrefixV4 = 24
	}
	if opts.MaxPrefixV6 <= 0 {
		opts.MaxPrefixV6 = 48
	}
	zone := dns.CanonicalName(cfg.Zone)
	log := opts.Logger.With("action", "dnsbl")
	p := &Publisher{cfg: cfg, zone: zone, log: log, refusal: ratelog.New(log, 10*time.Second), now: opts.Now,
		codes: map[string]dns.A{}, ttl: uint32(time.Duration(cfg.TTL).Seconds()),
		allowed: map[netip.Addr]bool{}, reg4: regionBits(opts.MaxPrefixV4, 8), reg6: regionBits(opts.MaxPrefixV6, 4),
		index: ban.NewIndex(), regions: map[netip.Prefix][]ban.Ban{},
		placeholderNodes: map[netip.Prefix]map[netip.Prefix]struct{}{}, v6Paths: map[netip.Prefix]int{}, reasons: map[string]string{},
		changed: make(chan struct{}, 1), expWake: make(chan struct{}, 1)}
	for det, s := range cfg.Codes {
		a, _ := parseCode(s)
		p.codes[det] = dns.A{A: a.AsSlice()}
	}
	if len(cfg.Detectors) > 0 {
		p.dets = map[string]bool{}
		for _, d := range cfg.Detectors {
			p.dets[d] = true
		}
	}
	mname, rname := cfg.SOA.MName, cfg.SOA.RName
	if mname == "" {
		mname = "ns." + zone
	}
	if rname == "" {
		rname = "hostmaster." + zone
	}
	secs := func(d Duration) uint32 { return uint32(time.Duration(d).Seconds()) }
	p.soa = dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: p.ttl},
		Ns: dns.CanonicalName(mname), Mbox: dns.CanonicalName(rname), Refresh: secs(cfg.SOA.Refresh),
		Retry: secs(cfg.SOA.Retry), Expire: secs(cfg.SOA.Expire), Minttl: secs(cfg.SOA.Minimum)}
	p.ns = dns.NS{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: p.ttl}, Ns: p.soa.Ns}
	for _, s := range cfg.Secondaries {
		sec, _ := parseSecondary(s)
		p.secs = append(p.secs, sec)
		p.allowed[sec.addr] = true
	}
	p.stats.bySecondary = map[netip.Addr]*secondaryCounters{}
	for _, s := range p.secs {
		if p.stats.bySecondary[s.addr] == nil {
			p.stats.bySecondary[s.addr] = &secondaryCounters{}
			p.stats.secondaryList = append(p.stats.secondaryList, s.addr)
		}
	}
	if cfg.TSIG.Name != "" {
		p.tsigKey = cfg.TSIG.Secrets()
	}
	if cfg.RateLimit.QPS > 0 {
		p.limiter = newRateLimiter(cfg.RateLimit.QPS, cfg.RateLimit.Burst, cfg.RateLimit.Clients)
	}
	var err error
	if p.serials, p.serial, err = openSerial(opts.SerialFile, opts.Now()); err != nil {
		return nil, err
	}
	var tests []change
	for _, t := range testEntries {
		b := testBan(t)
		tests = append(tests, change{prefix: t, new: &b})
	}
	p.mu.Lock()
	p.applyLocked(tests, false)
	p.mu.Unlock()
	return p, nil
}

// Name implements ban.Action.
func (p *Publisher) Name() string { return "dnsbl" }

// publishable reports whether b belongs in the zone.
func (p *Publisher) publishable(b ban.Ban) bool {
	switch {
	// A peer's ban published again would echo around the fleet for ever.
	case b.DryRun, b.Mirrored(), isTestEntry(b.Prefix):
		return false
	case p.dets != nil && !p.dets[b.Detector]:
		return false
	case !b.Until.After(p.now()):
		return false
	case ban.CheckPrefix(b.Prefix) != nil:
		return false
	}
	_, ok := p.regionOf(b.Prefix)
	return ok
}

func (p *Publisher) regionOf(pr netip.Prefix) (netip.Prefix, bool) {
	return regionOf(pr, p.reg4, p.reg6)
}

// Apply implements ban.Action: the ban is listed, or, when it must not be
// published (a dry-run or mirrored ban replacing a published one), the
// prefix is not listed any more.
func (p *Publisher) Apply(_ context.Context, b ban.Ban) error {
	if isTestEntry(b.Prefix) {
		return nil
	}
	ok := p.publishable(b)
	if !ok {
		if _, isPrefix := p.regionOf(b.Prefix); !isPrefix && b.Prefix.IsValid() && !b.DryRun && !b.Mirrored() {
			p.log.Warn("ban broader than ban.max_prefix not published", "ip", b.Prefix)
		}
		return p.Revoke(context.Background(), b.Prefix)
	}
	b = p.listing(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	old, had := p.index.Get(b.Prefix)
	if had && sameListing(old, b) {
		return nil
	}
	c := change{prefix: b.Prefix, new: &b}
	if had {
		c.old = &old
	}
	p.applyLocked([]change{c}, true)
	return nil
}

// Revoke implements ban.Action.
func (p *Publisher) Revoke(_ context.Context, pr netip.Prefix) error {
	if isTestEntry(pr) || !pr.IsValid() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old, had := p.index.Get(pr)
	if !had {
		return nil
	}
	p.applyLocked([]change{{prefix: pr, old: &old}}, true)
	return nil
}

// Sync implements ban.Action: the zone lists exactly the publishable bans
// of active, in one serial step.
func (p *Publisher) Sync(_ context.Context, active []ban.Ban) error {
	want := make(map[netip.Prefix]ban.Ban, len(active))
	for _, b := range active {
		if p.publishable(b) {
			b = p.listing(b)
			want[b.Prefix] = b
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var cs []change
	for _, bans := range p.regions {
		for _, old := range bans {
			pr := old.Prefix
			if isTestEntry(pr) {
				continue
			}
			if nb, ok := want[pr]; !ok {
				cs = append(cs, change{prefix: pr, old: &old})
			} else if !sameListing(old, nb) {
				cs = append(cs, change{prefix: pr, old: &old, new: &nb})
			}
		}
	}
	for pr, nb := range want {
		if _, had := p.index.Get(pr); !had {
			cs = append(cs, change{prefix: pr, new: &nb})
		}
	}
	if len(cs) > 0 {
		p.applyLocked(cs, true)
	}
	return nil
}

// listing is what of b is published: detector and reason made safe once
// (many bans share a reason text, so the cleaning is remembered), and
// nothing else than the TXT shows.
func (p *Publisher) listing(b ban.Ban) ban.Ban {
	p.reasonsMu.Lock()
	defer p.reasonsMu.Unlock()
	clean := func(s string) string {
		c, ok := p.reasons[s]
		if !ok {
			if len(p.reasons) >= maxReasonCache {
				clear(p.reasons)
			}
			c = shortReason(s)
			p.reasons[s] = c
		}
		return c
	}
	return ban.Ban{Prefix: b.Prefix, Detector: clean(b.Detector), Reason: clean(b.Reason), Since: b.Since, Until: b.Until}
}

// maxReasonCache bounds the cleaned reason texts remembered.
const maxReasonCache = 4096

func sameListing(a, b ban.Ban) bool {
	return a.Prefix == b.Prefix && a.Detector == b.Detector && a.Reason == b.Reason && a.Until.Equal(b.Until)
}

// applyLocked makes the changes: index, regions, expiry, and, when step
// is true (always but for the test entries at start), one serial step
// with one journal entry: the difference of the records the changes
// touch. Each touched region is copied once (a transfer renders the
// slices it took under the read lock after releasing it), and only the
// names on the paths of the changed prefixes are rendered.
// p.mu is held for writing.
func (p *Publisher) applyLocked(cs []change, step bool) {
	byRegion := map[netip.Prefix][]change{}
	for _, c := range cs {
		r, _ := p.regionOf(c.prefix)
		byRegion[r] = append(byRegion[r], c)
	}
	// A step too large for the journal (most changes are two records or
	// more; one that is not costs an AXFR) is not rendered: the journal
	// starts afresh after it.
	journal := step && len(cs) <= p.cfg.Journal/4
	var before, after map[string]record
	if journal {
		before, after = map[string]record{}, map[string]record{}
	}
	for r, rcs := range byRegion {
		old := p.regions[r]
		bans := p.applyRegion(slices.Clone(old), rcs)
		p.phMu.Lock()
		delete(p.placeholderNodes, r)
		p.phMu.Unlock()
		if len(bans) == 0 {
			delete(p.regions, r)
		} else {
			p.regions[r] = bans
		}
		if journal {
			scopes := make([]netip.Prefix, len(rcs))
			for i, c := range rcs {
				scopes[i] = c.prefix
			}
			renderScoped(before, old, r.Bits(), scopes)
			renderScoped(after, bans, r.Bits(), scopes)
		}
	}
	if len(p.expiry) > 2*p.count+1024 {
		p.compactExpiry()
	}
	if !step {
		return
	}
	from := p.bumpSerial()
	if journal {
		p.addJournal(from, p.serial, before, after)
	} else {
		p.journal, p.journalRRs = nil, 0
	}
	p.changedLocked()
}

// applyRegion applies the changes of one region to bans (the region's own
// copy) and to the index, count and expiry; it returns the region's bans.
func (p *Publisher) applyRegion(bans []ban.Ban, cs []change) []ban.Ban {
	var pos map[netip.Prefix]int // many changes (a Sync, a sweep): no search per change
	if len(cs) > 4 {
		pos = make(map[netip.Prefix]int, len(bans)+len(cs))
		for i, b := range bans {
			pos[b.Prefix] = i
		}
	}
	find := func(pr netip.Prefix) int {
		if pos == nil {
			return slices.IndexFunc(bans, func(b ban.Ban) bool { return b.Prefix == pr })
		}
		if i, ok := pos[pr]; ok {
			return i
		}
		return -1
	}
	for _, c := range cs {
		i := find(c.prefix)
		if c.new == nil {
			p.index.Remove(c.prefix)
			if i >= 0 {
				last := len(bans) - 1
				bans[i] = bans[last]
				bans = bans[:last]
				if pos != nil {
					delete(pos, c.prefix)
					if i < last {
						pos[bans[i].Prefix] = i
					}
				}
				p.count--
				p.countV6Paths(c.prefix, -1)
			}
			continue
		}
		p.index.Set(*c.new)
		if i >= 0 {
			bans[i] = *c.new
		} else {
			bans = append(bans, *c.new)
			if pos != nil {
				pos[c.prefix] = len(bans) - 1
			}
			p.count++
			p.countV6Paths(c.prefix, 1)
		}
		heap.Push(&p.expiry, expiryItem{until: c.new.Until, prefix: c.prefix})
	}
	return bans
}

// bumpSerial moves to the next serial and returns the one before.
func (p *Publisher) bumpSerial() uint32 {
	from := p.serial
	var err error
	if p.serial, err = p.serials.next(p.serial, p.now()); err != nil {
		p.log.Error("serial mark not saved: a restart may reuse serials", "err", err)
	}
	return from
}

// changedLocked wakes the NOTIFY and expiry loops.
func (p *Publisher) changedLocked() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
	select {
	case p.expWake <- struct{}{}:
	default:
	}
}

func (p *Publisher) countV6Paths(pr netip.Prefix, d int) {
	if pr.Addr().Is4() {
		return
	}
	for bits := 4; bits <= 16; bits += 4 {
		k, _ := pr.Addr().Prefix(bits)
		if p.v6Paths[k] += d; p.v6Paths[k] <= 0 {
			delete(p.v6Paths, k)
		}
	}
}

// addJournal records the step from → to as the records that went and
// came, dropping the oldest steps beyond the journal bound.
func (p *Publisher) addJournal(from, to uint32, before, after map[string]record) {
	var e journalEntry
	e.from, e.to = from, to
	for name, ob := range before {
		if nb, ok := after[name]; ok && p.sameRecord(ob, nb) {
			continue
		}
		e.del = append(e.del, p.recordRRs(ob)...)
	}
	for name, nb := range after {
		if ob, ok := before[name]; ok && p.sameRecord(ob, nb) {
			continue
		}
		e.add = append(e.add, p.recordRRs(nb)...)
	}
	n := len(e.del) + len(e.add) + 2
	if n > p.cfg.Journal {
		p.journal, p.journalRRs = nil, 0 // IXFR from before this step: AXFR
		return
	}
	p.journal = append(p.journal, e)
	p.journalRRs += n
	for p.journalRRs > p.cfg.Journal {
		p.journalRRs -= len(p.journal[0].del) + len(p.journal[0].add) + 2
		p.journal = slices.Delete(p.journal, 0, 1)
	}
}

func (p *Publisher) sameRecord(a, b record) bool {
	if a.placeholder || b.placeholder {
		return a.placeholder == b.placeholder
	}
	return p.code(a.ban.Detector).A.Equal(p.code(b.ban.Detector).A) && txtOf(a.ban) == txtOf(b.ban)
}

func (p *Publisher) code(detector string) dns.A {
	if a, ok := p.codes[detector]; ok {
		return a
	}
	return dns.A{A: net.IPv4(127, 0, 0, 2).To4()}
}

// recordRRs are the resource records of one rendered record.
func (p *Publisher) recordRRs(rec record) []dns.RR {
	if rec.placeholder {
		owner := rec.name + "." + p.zone
		return []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: p.ttl},
			Txt: []string{placeholderText}}}
	}
	return p.rrs(rec.name, rec.ban)
}

// rrs are the A and TXT records of one owner name (relative).
func (p *Publisher) rrs(rel string, b ban.Ban) []dns.RR {
	return p.rrsAt(rel+"."+p.zone, b)
}

func (p *Publisher) rrsAt(owner string, b ban.Ban) []dns.RR {
	a := p.code(b.Detector)
	a.Hdr = dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: p.ttl}
	t := &dns.TXT{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: p.ttl},
		Txt: []string{txtOf(b)}}
	return []dns.RR{&a, t}
}

// soaRR returns the SOA with the given serial.
func (p *Publisher) soaRR(serial uint32) *dns.SOA {
	s := p.soa
	s.Serial = serial
	return &s
}

// Serial returns the zone's current serial.
func (p *Publisher) Serial() uint32 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.serial
}

// Len returns the listings, the RFC 5782 test entries included.
func (p *Publisher) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.count
}

// compactExpiry drops the heap items of listings since changed or gone.
func (p *Publisher) compactExpiry() {
	keep := p.expiry[:0]
	for _, it := range p.expiry {
		if b, ok := p.index.Get(it.prefix); ok && b.Until.Equal(it.until) {
			keep = append(keep, it)
		}
	}
	p.expiry = keep
	heap.Init(&p.expiry)
}

// expireDue removes the listings whose Until has come, in one serial step,
// and returns when the next one is due (zero: none).
func (p *Publisher) expireDue() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var cs []change
	seen := map[netip.Prefix]bool{}
	for len(p.expiry) > 0 && !p.expiry[0].until.After(now) {
		it := heap.Pop(&p.expiry).(expiryItem)
		b, ok := p.index.Get(it.prefix)
		if !ok || !b.Until.Equal(it.until) || seen[it.prefix] {
			continue // changed since; a newer item stands for it
		}
		seen[it.prefix] = true
		cs = append(cs, change{prefix: it.prefix, old: &b})
	}
	if len(cs) > 0 {
		p.applyLocked(cs, true)
		p.log.Debug("listings expired", "count", len(cs), "serial", p.serial)
	}
	if len(p.expiry) == 0 {
		return time.Time{}
	}
	return p.expiry[0].until
}

// Start listens on cfg.Listen (UDP and TCP) and starts NOTIFY, the
// rbldnsd file and expiry in the background.
func (p *Publisher) Start() error {
	p.startMu.Lock()
	defer p.startMu.Unlock()
	if p.started || p.closed {
		return errors.New("dnsbl: Start called twice or after Close")
	}
	// secondaries have TCP slots of their own: clients holding idle
	// connections must not stall zone transfers
	pc, ln, err := dnsserve.Listen(p.cfg.Listen, dnsserve.TCPLimits{Trusted: func(a netip.Addr) bool { return p.allowed[a] }})
	if err != nil {
		return fmt.Errorf("publish.dnsbl.listen: %w", err)
	}
	var tsig map[string]string
	if p.tsigKey != nil {
		tsig = p.tsigKey
	}
	p.servers = []*dns.Server{
		{PacketConn: pc, Handler: p, TsigSecret: tsig, UDPSize: dns.DefaultMsgSize},
		{Listener: ln, Handler: p, TsigSecret: tsig, ReadTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second,
			MaxTCPQueries: 1000, IdleTimeout: func() time.Duration { return 10 * time.Second },
			DecorateReader: ln.DecorateReader},
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for _, s := range p.servers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := s.ActivateAndServe(); err != nil && ctx.Err() == nil {
				p.log.Error("dns server stopped", "err", err)
			}
		}()
	}
	// Once at start, changed or not: the rbldnsd file and the secondaries
	// may still hold what the previous run published.
	p.mu.Lock()
	p.changedLocked()
	p.mu.Unlock()
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.expireLoop(ctx) }()
	go func() { defer p.wg.Done(); p.notifyLoop(ctx) }()
	p.started = true
	p.log.Info("dnsbl serving", "zone", p.zone, "listen", pc.LocalAddr().String(), "serial", p.Serial(),
		"secondaries", len(p.secs))
	return nil
}

// Addr returns the address served (after Start), UDP and TCP alike.
func (p *Publisher) Addr() string {
	if len(p.servers) == 0 {
		return ""
	}
	return p.servers[0].PacketConn.LocalAddr().String()
}

func (p *Publisher) expireLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := p.expireDue()
		wait := time.Hour
		if !next.IsZero() {
			wait = min(max(next.Sub(p.now()), 0)+10*time.Millisecond, time.Hour)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.expWake:
		}
	}
}

// notifyLoop sends NOTIFY and rewrites the rbldnsd file once per change
// burst: notify_delay after the first change of a quiet spell.
func (p *Publisher) notifyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.changed:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(p.cfg.NotifyDelay)):
		}
		select { // changes during the delay are in this round
		case <-p.changed:
		default:
		}
		serial := p.Serial()
		if p.cfg.RbldnsdFile != "" {
			if err := p.writeRbldnsd(); err != nil {
				p.log.Error("rbldnsd file", "path", p.cfg.RbldnsdFile, "err", err)
			}
		}
		for _, s := range p.secs {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.notify(ctx, s, serial)
			}()
		}
	}
}

// Close stops the server and the background work. Idempotent.
func (p *Publisher) Close() error {
	p.startMu.Lock()
	defer p.startMu.Unlock()
	if p.closed {
		return p.closeErr
	}
	p.closed = true
	if p.cancel != nil {
		p.cancel()
	}
	var errs []error
	for _, s := range p.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := s.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	p.wg.Wait()
	p.closeErr = errors.Join(errs...)
	return p.closeErr
}
