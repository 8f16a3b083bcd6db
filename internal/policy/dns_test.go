package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/smtpcheck"
)

// fakeResolver answers DNSBL queries from listed (query name → listed)
// and PTR queries from ptr; tempFail makes PTR lookups fail.
type fakeResolver struct {
	listed   map[string]bool
	ptr      map[netip.Addr][]string
	fwd      map[string][]netip.Addr
	tempFail atomic.Bool
	queries  atomic.Int64
}

func (f *fakeResolver) LookupIP(_ context.Context, name string, _ bool) ([]netip.Addr, error) {
	f.queries.Add(1)
	if f.listed[name] {
		return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
	}
	if a, ok := f.fwd[name]; ok {
		return a, nil
	}
	return nil, smtpcheck.ErrNotFound
}

func (f *fakeResolver) LookupMX(context.Context, string) ([]string, error) {
	return nil, smtpcheck.ErrNotFound
}

func (f *fakeResolver) LookupAddr(_ context.Context, a netip.Addr) ([]string, error) {
	if f.tempFail.Load() {
		return nil, errors.New("SERVFAIL")
	}
	if n, ok := f.ptr[a]; ok {
		return n, nil
	}
	return nil, smtpcheck.ErrNotFound
}

func TestDNSBLAndFCrDNS(t *testing.T) {
	res := &fakeResolver{
		listed: map[string]bool{
			"10.2.0.192.big.example": true, "10.2.0.192.small.example": true, // 192.0.2.10: 3 + 1
			"11.2.0.192.small.example": true, // 192.0.2.11: 1
		},
		ptr: map[netip.Addr][]string{netip.MustParseAddr("192.0.2.12"): {"mta.remote.example"}},
		fwd: map[string][]netip.Addr{"mta.remote.example": {netip.MustParseAddr("192.0.2.12")}},
	}
	cfg := testConfig(t)
	cfg.DNSBL.Sites = []string{"big.example*3", "small.example"}
	cfg.DNSBL.Threshold = 3
	cfg.Checks.FCrDNS = Defer
	ev := &events{}
	_, path := start(t, cfg, Deps{Resolver: res, Sink: ev.sink})
	c := dial(t, path)
	for _, tc := range []struct {
		name, ip, clientName, want string
		kind                       event.Kind
		abuse                      bool
	}{
		{"listed over the threshold", "192.0.2.10", "mta.remote.example",
			"REJECT mxguard: Service unavailable; client [192.0.2.10] blocked using big.example, small.example", event.KindDNSBL, true},
		{"listed under the threshold", "192.0.2.11", "mta.remote.example", "DUNNO", event.KindNone, false},
		{"Postfix confirmed the name", "192.0.2.13", "mta.remote.example", "DUNNO", event.KindNone, false},
		{"unknown to Postfix, confirmed by us", "192.0.2.12", "unknown", "DUNNO", event.KindNone, false},
		{"no PTR", "192.0.2.14", "unknown", "DEFER_IF_PERMIT mxguard: cannot find your hostname, [192.0.2.14]", event.KindReject, false},
	} {
		n := len(ev.all())
		got := c.mustAsk(req("client_address", tc.ip, "client_name", tc.clientName))
		if !strings.HasPrefix(got, tc.want) {
			t.Fatalf("%s: %q, want %q", tc.name, got, tc.want)
		}
		c.flushed()
		evs := ev.all()[n:]
		if tc.kind == event.KindNone {
			if len(evs) != 0 {
				t.Fatalf("%s: events %+v", tc.name, evs)
			}
			continue
		}
		if len(evs) != 1 || evs[0].Kind != tc.kind || evs[0].Abuse != tc.abuse {
			t.Fatalf("%s: events %+v, want one %v abuse=%v", tc.name, evs, tc.kind, tc.abuse)
		}
	}
	// a DNS failure is our trouble: the client passes
	res.tempFail.Store(true)
	if got := c.mustAsk(req("client_address", "192.0.2.15", "client_name", "unknown")); got != "DUNNO" {
		t.Fatalf("PTR lookup failed: %q, want DUNNO", got)
	}
}

// deadResolver never answers (a dead DNS server): each lookup waits for
// its context to end; it records the deadline every lookup was given.
type deadResolver struct {
	mu        sync.Mutex
	deadlines []time.Time
}

func (d *deadResolver) wait(ctx context.Context) error {
	dl, _ := ctx.Deadline()
	d.mu.Lock()
	d.deadlines = append(d.deadlines, dl)
	d.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (d *deadResolver) LookupIP(ctx context.Context, _ string, _ bool) ([]netip.Addr, error) {
	return nil, d.wait(ctx)
}
func (d *deadResolver) LookupMX(ctx context.Context, _ string) ([]string, error) {
	return nil, d.wait(ctx)
}
func (d *deadResolver) LookupAddr(ctx context.Context, _ netip.Addr) ([]string, error) {
	return nil, d.wait(ctx)
}

// With DNS down a request spends one DNS budget (dnsbl.timeout) for
// DNSBL and FCrDNS together, not one each: every lookup shares the
// deadline the first one got.
func TestOneDNSBudgetPerRequest(t *testing.T) {
	cfg := testConfig(t)
	cfg.DNSBL.Sites = []string{"zen.example", "bl.example"}
	cfg.DNSBL.Timeout = Duration(100 * time.Millisecond)
	cfg.Checks.FCrDNS = Reject
	res := &deadResolver{}
	_, path := start(t, cfg, Deps{Resolver: res})
	c := dial(t, path)
	if a := c.mustAsk(req("client_name", "unknown")); a != "DUNNO" {
		t.Fatalf("DNS down: %q, want DUNNO (a DNS failure lets the client through)", a)
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	if len(res.deadlines) != 3 { // two DNSBL sites and the PTR
		t.Fatalf("%d lookups, want 3", len(res.deadlines))
	}
	first := res.deadlines[0]
	for i, dl := range res.deadlines {
		if first.IsZero() || !dl.Equal(first) {
			t.Fatalf("lookup %d has deadline %v, not the request's one budget %v: %v", i, dl, first, res.deadlines)
		}
	}
}

// A DNSBL finding only warned about is a reject_warning (as Postfix logs
// warn_if_reject), never a DNSBL listing the detectors would weigh.
func TestDNSBLWarnIsNoListingEvent(t *testing.T) {
	res := &fakeResolver{listed: map[string]bool{"10.2.0.192.big.example": true}}
	for _, tc := range []struct {
		act   Action
		kind  event.Kind
		abuse bool
	}{
		{Reject, event.KindDNSBL, true},
		{Defer, event.KindDNSBL, true},
		{Warn, event.KindRejectWarning, false},
	} {
		cfg := testConfig(t)
		cfg.DNSBL.Sites = []string{"big.example*3"}
		cfg.Checks.DNSBL = tc.act
		ev := &events{}
		_, path := start(t, cfg, Deps{Resolver: res, Sink: ev.sink})
		c := dial(t, path)
		c.mustAsk(req())
		c.flushed()
		evs := ev.all()
		if len(evs) != 1 || evs[0].Kind != tc.kind || evs[0].Abuse != tc.abuse || evs[0].Reason != event.ReasonDNSBL {
			t.Fatalf("%s: events %+v, want one %v abuse=%v reason dnsbl", tc.act, evs, tc.kind, tc.abuse)
		}
	}
}

// deadZoneResolver hangs on DNSBL queries (a dead zone) until the
// request's budget ends and answers PTR queries at once, but, like the
// real resolver, only while the budget lasts.
type deadZoneResolver struct{}

func (deadZoneResolver) LookupIP(ctx context.Context, _ string, _ bool) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (deadZoneResolver) LookupMX(context.Context, string) ([]string, error) {
	return nil, smtpcheck.ErrNotFound
}
func (deadZoneResolver) LookupAddr(ctx context.Context, _ netip.Addr) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, smtpcheck.ErrNotFound
}

// A dead DNSBL zone that eats the request's DNS budget does not turn
// FCrDNS off: the PTR lookup runs beside the DNSBL lookups.
func TestDeadDNSBLZoneLeavesFCrDNSWorking(t *testing.T) {
	cfg := testConfig(t)
	cfg.DNSBL.Sites = []string{"dead.example"}
	cfg.DNSBL.Timeout = Duration(50 * time.Millisecond)
	cfg.Checks.FCrDNS = Defer
	_, path := start(t, cfg, Deps{Resolver: deadZoneResolver{}})
	c := dial(t, path)
	want := "DEFER_IF_PERMIT mxguard: cannot find your hostname, [192.0.2.14]"
	if got := c.mustAsk(req("client_address", "192.0.2.14", "client_name", "unknown")); !strings.HasPrefix(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
}
