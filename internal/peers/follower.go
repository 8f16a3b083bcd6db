package peers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
)

// Mirrorer is where a follower puts the peer's bans: the ban Manager.
type Mirrorer interface {
	SyncMirror(ctx context.Context, source string, entries []ban.MirrorEntry, refreshBelow time.Duration) (ban.MirrorSyncResult, error)
}

// Status is one peer's state for `mxguard status`.
type Status struct {
	Name         string               `json:"name"`
	Zone         string               `json:"zone"`
	Primary      string               `json:"primary"`
	Serial       uint32               `json:"serial"`
	HaveZone     bool                 `json:"have_zone"`
	LastTransfer time.Time            `json:"last_transfer,omitzero"` // last AXFR or IXFR that changed the zone
	LastKind     string               `json:"last_kind,omitempty"`    // axfr, ixfr, or axfr after a failed ixfr
	LastCheck    time.Time            `json:"last_check,omitzero"`    // last successful contact (up to date included)
	NextCheck    time.Time            `json:"next_check,omitzero"`
	Transfers    uint64               `json:"transfers"`
	Notifies     uint64               `json:"notifies"`
	Entries      int                  `json:"entries"` // listings in the zone that are mirrored (shadowed ones included)
	Skipped      map[string]int       `json:"skipped"` // names of the zone not mirrored, by reason
	Mirror       ban.MirrorSyncResult `json:"mirror"`  // what the last sync did
	Failures     uint64               `json:"failures"`
	LastError    string               `json:"last_error,omitempty"`
	LastErrorAt  time.Time            `json:"last_error_at,omitzero"`
}

// Follower keeps one peer's zone and mirrors its listings.
type Follower struct {
	cfg    Config
	origin string
	mirror Mirrorer
	log    *slog.Logger
	now    func() time.Time
	wake   chan struct{} // NOTIFY: check now; a buffer of one coalesces a burst

	// timeout bounds one transfer's dial and each read.
	timeout time.Duration

	savePath string    // state_dir's copy of the zone (saved.go); "" keeps none
	unsaved  *zone     // a zone newer than the file, saved at most every saveEvery
	savedAt  time.Time // when the file was last written

	mu       sync.Mutex
	z        *zone // nil until the first transfer
	status   Status
	primary  []netip.Addr // the primary's addresses, for NOTIFY checks
	resolved time.Time
	// resolveFailed is when resolving the primary last failed: NOTIFYs
	// arriving meanwhile do not each wait for the resolver again.
	resolveFailed time.Time
	// lookupHost resolves the primary's host name.
	lookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
}

// resolveFailureTTL is how long a failed resolution of the primary holds.
const resolveFailureTTL = 10 * time.Second

// NewFollower makes the follower of cfg (defaults filled, validated by
// the config). logger nil discards; now nil is time.Now.
func NewFollower(cfg Config, m Mirrorer, logger *slog.Logger, now func() time.Time) *Follower {
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Follower{cfg: cfg, origin: cfg.ZoneFQDN(), mirror: m, now: now, timeout: 10 * time.Second,
		log:  logger.With("peer", cfg.Name, "zone", cfg.ZoneFQDN()),
		wake: make(chan struct{}, 1),
		lookupHost: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		status: Status{Name: cfg.Name, Zone: cfg.ZoneFQDN(), Primary: cfg.Primary, Skipped: map[string]int{}}}
}

// Name is the peer's name.
func (f *Follower) Name() string { return f.cfg.Name }

// Status returns a copy of the follower's state.
func (f *Follower) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status
	s.Skipped = maps.Clone(f.status.Skipped)
	return s
}

// Notify asks for a check now (a NOTIFY arrived).
func (f *Follower) Notify() {
	f.mu.Lock()
	f.status.Notifies++
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run transfers the zone at once (AXFR) and then whenever a NOTIFY
// arrives or the refresh interval passes (IXFR), until ctx is done. After
// every successful contact the listings are mirrored again, so that the
// mirrored bans' until follows max_ban while the peer answers.
func (f *Follower) Run(ctx context.Context) error {
	f.restore(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			f.saveNow()
			return nil
		case <-timer.C:
		case <-f.wake:
		}
		wait := f.Check(ctx)
		f.mu.Lock()
		f.status.NextCheck = f.now().Add(wait)
		f.mu.Unlock()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// Check brings the zone up to date once and mirrors it; it returns when
// the next check is due.
func (f *Follower) Check(ctx context.Context) time.Duration {
	err := f.update(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.status.Failures++
		f.status.LastError, f.status.LastErrorAt = err.Error(), f.now()
		f.log.Warn("peer zone transfer failed", "primary", f.cfg.Primary, "err", err)
		return f.retryLocked()
	}
	f.status.LastError = ""
	return f.refreshLocked()
}

// refreshLocked is the poll interval: refresh, or the zone's SOA refresh,
// but at most a third of max_ban, so that the mirrored bans (max_ban from
// the last contact) are refreshed before they lapse, a failed poll or
// two included.
func (f *Follower) refreshLocked() time.Duration {
	d := defaultRefresh
	switch {
	case f.cfg.Refresh > 0:
		d = f.cfg.Refresh.D()
	case f.z != nil:
		d = clampInterval(time.Duration(f.z.soa.Refresh) * time.Second)
	}
	if maxBan := f.cfg.MaxBan.D(); maxBan > 0 {
		d = min(d, max(maxBan/3, time.Second))
	}
	return d
}

// retryLocked is the wait after a failure: the SOA retry, at most the
// refresh interval.
func (f *Follower) retryLocked() time.Duration {
	r := f.refreshLocked()
	if f.cfg.Refresh == 0 && f.z != nil {
		r = min(r, clampInterval(time.Duration(f.z.soa.Retry)*time.Second))
	}
	if f.z == nil {
		r = min(r, time.Minute) // nothing mirrored yet: try again soon
	}
	return r
}

func clampInterval(d time.Duration) time.Duration {
	return min(max(d, minRefresh), 24*time.Hour)
}

// update transfers what changed (AXFR the first time, IXFR after) and
// mirrors the zone held.
func (f *Follower) update(ctx context.Context) error {
	f.mu.Lock()
	z := f.z
	f.mu.Unlock()
	var (
		next *zone
		kind string
		err  error
	)
	if z == nil {
		next, err = f.axfr(ctx)
		kind = "axfr"
	} else {
		// A SOA query first, as secondaries do: a primary that answers
		// IXFR with the whole zone (older NSD) is then not asked for it
		// at every refresh.
		var serial uint32
		if serial, err = f.soaSerial(ctx); err == nil && serial != z.soa.Serial {
			next, kind, err = f.ixfr(ctx, z)
		}
	}
	if err != nil {
		return err
	}
	now := f.now()
	f.mu.Lock()
	f.status.LastCheck = now
	if next != nil {
		f.z = next
		f.status.Serial, f.status.HaveZone = next.soa.Serial, true
		f.status.LastTransfer, f.status.LastKind = now, kind
		f.status.Transfers++
		f.log.Info("peer zone transferred", "kind", kind, "serial", next.soa.Serial, "names", len(next.names))
	}
	z = f.z
	f.mu.Unlock()
	if next != nil {
		f.unsaved = next
	}
	switch {
	case f.unsaved != nil && now.Sub(f.savedAt) >= saveEvery:
		f.saveNow()
	case f.unsaved == nil:
		// The file holds the zone in force: the contact is its age. With a
		// newer zone waiting, the older one in the file must not look
		// fresh after a restart.
		f.touch(now)
	}
	return f.mirrorZone(ctx, z, now)
}

// mirrorZone hands the zone's listings to the Manager; max_ban counts
// from contact, the last time the primary confirmed the zone.
func (f *Follower) mirrorZone(ctx context.Context, z *zone, contact time.Time) error {
	entries, skipped := z.entries()
	now := f.now()
	maxBan := f.cfg.MaxBan.D()
	list := make([]ban.MirrorEntry, 0, len(entries))
	for _, e := range entries {
		until := mirrorUntil(e, contact, maxBan)
		if !until.After(now) {
			skipped[SkipOver]++
			continue
		}
		reason := e.Reason
		if e.Detector != "" {
			reason = e.Detector + ": " + e.Reason
		}
		if reason == "" {
			reason = fmt.Sprintf("listed by %s (127.0.0.%d)", f.cfg.Name, e.Code)
		}
		list = append(list, ban.MirrorEntry{Prefix: e.Prefix, Reason: reason, Until: until})
	}
	res, err := f.mirror.SyncMirror(ctx, f.cfg.Name, list, maxBan/2)
	if err != nil {
		return fmt.Errorf("mirror %s: %w", f.cfg.Name, err)
	}
	skipped[SkipAllowlist] += res.Allowlisted
	skipped[SkipTooBroad] += res.TooBroad
	skipped[SkipOver] += res.Over
	for k, v := range skipped {
		if v == 0 {
			delete(skipped, k)
		}
	}
	inForce := res.Added + res.Refreshed + res.Unchanged + res.Shadowed
	f.mu.Lock()
	f.status.Entries = inForce
	f.status.Skipped = skipped
	f.status.Mirror = res
	f.mu.Unlock()
	if res.Added+res.Lifted > 0 {
		f.log.Info("peer bans mirrored", "added", res.Added, "lifted", res.Lifted, "refreshed", res.Refreshed,
			"in_force", inForce, "skipped", skipped)
	}
	return nil
}

// bytesPerEntry bounds the record bytes a transfer may bring per entry
// of max_entries: an A and a TXT of the agreed form take about 250.
const bytesPerEntry = 1024

func (f *Follower) transfer(ctx context.Context, q *dns.Msg) ([]dns.RR, error) {
	if key := f.cfg.KeyFQDN(); key != "" {
		q.SetTsig(key, dns.HmacSHA256, 300, f.now().Unix())
	}
	d := net.Dialer{Timeout: f.timeout}
	conn, err := d.DialContext(ctx, "tcp", f.cfg.Primary)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", f.cfg.Primary, err)
	}
	t := &dns.Transfer{Conn: &dns.Conn{Conn: conn}, ReadTimeout: f.timeout, WriteTimeout: f.timeout}
	if key := f.cfg.KeyFQDN(); key != "" {
		t.TsigSecret = map[string]string{key: f.cfg.TSIG.Secret}
	}
	// The transfer sets its own read deadlines; closing the connection is
	// what ends it when ctx is done.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	ch, err := t.In(q, f.cfg.Primary)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s of %s from %s: %w", dns.TypeToString[q.Question[0].Qtype], f.origin, f.cfg.Primary, err)
	}
	var rrs []dns.RR
	limit := 3*f.cfg.MaxEntries + 16 // an A, a TXT and some slack per name
	byteLimit := int64(f.cfg.MaxEntries+16) * bytesPerEntry
	var (
		terr      error
		size      int64
		overLimit error
	)
	for env := range ch {
		if overLimit != nil {
			continue // the connection is closed: the transfer ends at once
		}
		if env.Error != nil {
			if terr == nil {
				terr = env.Error
			}
			continue
		}
		rrs = append(rrs, env.RR...)
		for _, rr := range env.RR {
			size += int64(dns.Len(rr))
		}
		switch {
		case len(rrs) > limit:
			overLimit = fmt.Errorf("%w (%d)", errTooMany, f.cfg.MaxEntries)
		case size > byteLimit:
			overLimit = fmt.Errorf("%w: more than %d bytes for max_entries %d", errTooMany, byteLimit, f.cfg.MaxEntries)
		}
		if overLimit != nil {
			conn.Close() // do not read the rest a peer may send without end
			rrs = nil
		}
	}
	if overLimit != nil {
		return nil, fmt.Errorf("%s of %s from %s: %w", dns.TypeToString[q.Question[0].Qtype], f.origin, f.cfg.Primary, overLimit)
	}
	if terr != nil {
		return nil, fmt.Errorf("%s of %s from %s: %w%s", dns.TypeToString[q.Question[0].Qtype], f.origin, f.cfg.Primary, terr, tsigHint(terr))
	}
	return rrs, nil
}

func (f *Follower) axfr(ctx context.Context) (*zone, error) {
	q := new(dns.Msg)
	q.SetAxfr(f.origin)
	rrs, err := f.transfer(ctx, q)
	if err != nil {
		return nil, err
	}
	z, err := fullZone(f.origin, rrs, f.cfg.MaxEntries)
	if err != nil {
		return nil, err
	}
	return z, nil
}

// ixfr asks for the changes since z; nil zone: z is current. It falls
// back to an AXFR when the primary fails the IXFR, answers with a
// version it cannot apply or past the limits, or says only that a newer
// version exists.
func (f *Follower) ixfr(ctx context.Context, z *zone) (*zone, string, error) {
	q := new(dns.Msg)
	q.SetIxfr(f.origin, z.soa.Serial, z.soa.Ns, z.soa.Mbox)
	rrs, err := f.transfer(ctx, q)
	if err == nil && len(rrs) > 0 {
		soa, ok := rrs[0].(*dns.SOA)
		switch {
		case !ok:
			err = errors.New("answer does not start with the SOA")
		case len(rrs) == 1 && soa.Serial == z.soa.Serial:
			return nil, "", nil // up to date
		case len(rrs) == 1 && serialNewer(soa.Serial, z.soa.Serial):
			err = errors.New("only the new SOA (the primary wants an AXFR)")
		case len(rrs) == 1:
			// an older serial: the peer's zone was rebuilt from scratch
			// (or restored); its current content is what it lists now
			err = fmt.Errorf("the primary's serial %d is older than ours (%d)", soa.Serial, z.soa.Serial)
		default:
			if _, incremental := rrs[1].(*dns.SOA); !incremental {
				// the whole zone, AXFR-style
				next, ferr := fullZone(f.origin, rrs, f.cfg.MaxEntries)
				return next, "axfr-style ixfr", ferr
			}
			next, aerr := z.applyIXFR(rrs, f.cfg.MaxEntries)
			if aerr == nil {
				return next, "ixfr", nil
			}
			err = aerr
		}
	} else if err == nil {
		err = errors.New("empty answer")
	}
	// an IXFR over the limits too: the differences can be larger than
	// the zone (every name replaced), and the AXFR keeps to the same limits
	f.log.Info("peer IXFR failed; falling back to AXFR", "err", err)
	next, aerr := f.axfr(ctx)
	if aerr != nil {
		return nil, "", fmt.Errorf("%w (after IXFR failed: %w)", aerr, err)
	}
	return next, "axfr after ixfr", nil
}

// soaSerial asks the primary for the zone's SOA (over TCP, signed like
// the transfers) and returns its serial.
func (f *Follower) soaSerial(ctx context.Context) (uint32, error) {
	q := new(dns.Msg)
	q.SetQuestion(f.origin, dns.TypeSOA)
	c := &dns.Client{Net: "tcp", Timeout: f.timeout}
	if key := f.cfg.KeyFQDN(); key != "" {
		q.SetTsig(key, dns.HmacSHA256, 300, f.now().Unix())
		c.TsigSecret = map[string]string{key: f.cfg.TSIG.Secret}
	}
	r, _, err := c.ExchangeContext(ctx, q, f.cfg.Primary)
	if err != nil {
		return 0, fmt.Errorf("SOA of %s from %s: %w%s", f.origin, f.cfg.Primary, err, tsigHint(err))
	}
	if r.Rcode != dns.RcodeSuccess {
		return 0, fmt.Errorf("SOA of %s from %s: %s", f.origin, f.cfg.Primary, dns.RcodeToString[r.Rcode])
	}
	if key := f.cfg.KeyFQDN(); key != "" {
		// The client verifies a TSIG the answer has, but takes an
		// unsigned answer: that is no contact with the primary.
		if t := r.IsTsig(); t == nil || dns.CanonicalName(t.Hdr.Name) != key {
			return 0, fmt.Errorf("SOA of %s from %s: the answer is not signed with %s%s", f.origin, f.cfg.Primary, key, tsigHint(dns.ErrNoSig))
		}
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok && dns.CanonicalName(soa.Hdr.Name) == f.origin {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("SOA of %s from %s: no SOA in the answer", f.origin, f.cfg.Primary)
}

// serialNewer reports a > b in RFC 1982 serial arithmetic.
func serialNewer(a, b uint32) bool { return a != b && int32(a-b) > 0 }

// primaryAddrs are the addresses NOTIFYs for this zone may come from: the
// primary's, resolved again at most once a minute.
func (f *Follower) primaryAddrs(ctx context.Context) []netip.Addr {
	f.mu.Lock()
	if f.primary != nil && f.now().Sub(f.resolved) < time.Minute || f.now().Sub(f.resolveFailed) < resolveFailureTTL {
		defer f.mu.Unlock()
		return f.primary
	}
	f.mu.Unlock()
	host, _, err := net.SplitHostPort(f.cfg.Primary)
	if err != nil {
		return nil
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		got, err := f.lookupHost(rctx, host)
		if err != nil {
			f.log.Warn("resolve the peer's primary for NOTIFY", "primary", f.cfg.Primary, "err", err)
			f.mu.Lock()
			f.resolveFailed = f.now()
			f.mu.Unlock()
		}
		for _, a := range got {
			addrs = append(addrs, a.Unmap())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(addrs) > 0 {
		f.primary, f.resolved = addrs, f.now()
	}
	return f.primary
}

// tsigHint explains a TSIG failure: a primary that does not know the key
// (or has another secret) answers unsigned, which reads as "no signature".
func tsigHint(err error) string {
	switch {
	case errors.Is(err, dns.ErrNoSig), errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrAuth):
		return " (TSIG: check that the primary knows tsig.name with this secret and allows it to transfer the zone)"
	case errors.Is(err, dns.ErrTime):
		return " (TSIG: the clocks of this host and the primary differ by more than 5 minutes)"
	}
	return ""
}
