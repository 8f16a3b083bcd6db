package detectors

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

const benchRaw = "Nov 25 10:49:00 mx postfix/submission/smtpd[4711]: warning: unknown[10.1.2.3]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"

func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// BenchmarkObserve feeds a mix of events over 10k clients: context lines,
// SASL failures, unknown recipients, rejects, forgiveness.
func BenchmarkObserve(b *testing.B) {
	e, err := New(DefaultConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	kinds := []event.Event{
		{Kind: event.KindConnect},
		{Kind: event.KindSASLFail, Abuse: true},
		{Kind: event.KindReject, Reason: event.ReasonUnknownRecipient, Stage: "RCPT", Abuse: true},
		{Kind: event.KindDisconnect, Detail: "ehlo=1 quit=1 commands=2"},
		{Kind: event.KindReject, Reason: event.ReasonRelayDenied, Stage: "RCPT", Abuse: true},
		{Kind: event.KindReceived},
		{Kind: event.KindLostConnection, Stage: "CONNECT", Abuse: true},
		{Kind: event.KindPSPass},
	}
	tos := make([]string, 64)
	for i := range tos {
		tos[i] = fmt.Sprintf("user%d@example.org", i)
	}
	decisions := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := kinds[i%len(kinds)]
		ev.Time = t0.Add(time.Duration(i) * 10 * time.Millisecond)
		ev.Client = benchAddr(i * 7919 % 10000)
		ev.To = tos[i%len(tos)]
		ev.Raw = benchRaw
		decisions += len(e.Observe(ev))
	}
	b.ReportMetric(float64(decisions)/float64(b.N), "decisions/op")
}

// BenchmarkObserveContext is the common case: a line that is no evidence.
func BenchmarkObserveContext(b *testing.B) {
	e, err := New(DefaultConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ev := event.Event{Kind: event.KindConnect, Raw: benchRaw}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev.Time = t0.Add(time.Duration(i) * time.Millisecond)
		ev.Client = benchAddr(i % 50000)
		e.Observe(ev)
	}
}

// BenchmarkMemory1M tracks one million distinct clients, each with one SASL
// failure (which also opens an error_burst window), and reports the heap
// the engine holds per client, with the default 5 evidence lines and with
// none. Run with -benchtime=1x.
func BenchmarkMemory1M(b *testing.B) {
	const n = 1_000_000
	for _, keep := range []int{5, 0} {
		b.Run(fmt.Sprintf("evidence_lines=%d", keep), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.MaxClients = n
			cfg.EvidenceLines = keep
			var perClient float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				e, err := New(cfg, nil)
				if err != nil {
					b.Fatal(err)
				}
				ev := event.Event{Kind: event.KindSASLFail, Abuse: true, Raw: benchRaw}
				for i := range n {
					ev.Time = t0.Add(time.Duration(i) * time.Millisecond) // 1M in ~17m: none expire
					ev.Client = benchAddr(i)
					e.Observe(ev)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if st := e.Stats(); st.Clients != n {
					b.Fatalf("tracked %d clients, want %d", st.Clients, n)
				}
				perClient = float64(after.HeapAlloc-before.HeapAlloc) / n
				runtime.KeepAlive(e)
			}
			b.ReportMetric(perClient, "bytes/client")
			b.ReportMetric(float64(len(benchRaw)), "line-bytes")
		})
	}
}

// BenchmarkObserveClasses feeds the events of the newer detectors over
// 10k clients: flood kinds, SASL failures with usernames (sasl_spray and
// the long window), scored events (score), access-list and content
// rejects, unknown recipients (dictionary per prefix) and accepted mail.
func BenchmarkObserveClasses(b *testing.B) {
	e, err := New(DefaultConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	kinds := []event.Event{
		{Kind: event.KindConnect},
		{Kind: event.KindLostConnection, Stage: "CONNECT"},
		{Kind: event.KindSASLFail, Abuse: true},
		{Kind: event.KindDisconnect, Detail: "mail=1 rcpt=1 data=1 quit=1 commands=4"},
		{Kind: event.KindHostnameMismatch},
		{Kind: event.KindReject, Reason: event.ReasonClientAccess, Stage: "CONNECT", Abuse: true},
		{Kind: event.KindReject, Reason: event.ReasonMessageRejected, Stage: "END-OF-MESSAGE", Service: "postfix/cleanup", Abuse: true},
		{Kind: event.KindReject, Reason: event.ReasonUnknownRecipient, Stage: "RCPT", Abuse: true},
		{Kind: event.KindReceived},
		{Kind: event.KindTLSError, PID: 4711},
		{Kind: event.KindRateLimit, Detail: event.LimitConnectionRate},
		{Kind: event.KindSASLLogin},
	}
	users := make([]string, 16)
	tos := make([]string, 64)
	for i := range users {
		users[i] = fmt.Sprintf("user%d@example.org", i)
	}
	for i := range tos {
		tos[i] = fmt.Sprintf("user%d@example.org", i)
	}
	decisions := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := kinds[i%len(kinds)]
		ev.Time = t0.Add(time.Duration(i) * 10 * time.Millisecond)
		ev.Client = benchAddr(i * 7919 % 10000)
		ev.To = tos[i%len(tos)]
		if ev.Kind == event.KindSASLFail || ev.Kind == event.KindSASLLogin {
			ev.Detail = users[i%len(users)]
		}
		ev.Raw = benchRaw
		decisions += len(e.Observe(ev))
	}
	b.ReportMetric(float64(decisions)/float64(b.N), "decisions/op")
}

// BenchmarkMemory reports the heap the engine holds per tracked client and
// per tracked prefix with the defaults (long SASL window, sasl_spray,
// score and dictionary per prefix on), 100k of each. Run with
// -benchtime=1x.
//
//	light:  one SASL failure (sasl_bruteforce and error_burst windows)
//	heavy:  7 SASL failures 30 minutes apart with 3 usernames (the long
//	        window full but for one, sasl_spray one short), a session
//	        without HELO (a score) and a flood event
//	fixed:  an engine with no clients at the default max_clients (the
//	        signs table); light and heavy leave it out
//	prefix: 14 distinct unknown recipients from 3 addresses of each /24
//	        (one short of the prefix threshold), the prefix's share only:
//	        the same traffic with per_prefix off is subtracted
func BenchmarkMemory(b *testing.B) {
	const n = 100_000
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	// fill returns the heap the states take: the engine's fixed memory
	// (the signs table), which depends on max_clients, not on the clients
	// tracked, is left out.
	fill := func(b *testing.B, cfg Config, feed func(e *Engine)) (float64, Stats) {
		e, err := New(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		before := heap()
		feed(e)
		used := float64(heap() - before)
		st := e.Stats()
		if st.Evicted > 0 || st.Expired > 0 {
			b.Fatalf("states dropped: %+v", st)
		}
		if d := st.Decisions; d[SASLBruteforce]+d[SASLSpray]+d[Score]+d[Dictionary]+d[Flood] != 0 {
			b.Fatalf("decided: %v", d)
		}
		runtime.KeepAlive(e)
		return used, st
	}
	b.Run("fixed", func(b *testing.B) {
		var used float64
		for b.Loop() {
			before := heap()
			e, err := New(DefaultConfig(), nil)
			if err != nil {
				b.Fatal(err)
			}
			used = float64(heap() - before)
			runtime.KeepAlive(e)
		}
		b.ReportMetric(used/(1<<20), "MiB/engine")
	})
	cfg := DefaultConfig()
	cfg.MaxClients = 4 * n
	users := []string{"admin", "info", "sales"}
	b.Run("light", func(b *testing.B) {
		var per float64
		for b.Loop() {
			used, st := fill(b, cfg, func(e *Engine) {
				ev := event.Event{Kind: event.KindSASLFail, Abuse: true, Raw: benchRaw}
				for i := range n {
					ev.Time = t0.Add(time.Duration(i) * time.Millisecond)
					ev.Client = benchAddr(i)
					e.Observe(ev)
				}
			})
			per = used / float64(st.Clients)
		}
		b.ReportMetric(per, "bytes/client")
	})
	b.Run("heavy", func(b *testing.B) {
		var per float64
		for b.Loop() {
			used, st := fill(b, cfg, func(e *Engine) {
				for r := range 7 {
					base := t0.Add(time.Duration(r) * 30 * time.Minute)
					for i := range n {
						at := base.Add(time.Duration(i) * 10 * time.Microsecond)
						c := benchAddr(i)
						e.Observe(event.Event{Time: at, Client: c, Kind: event.KindSASLFail, Abuse: true, Detail: users[r%3], Raw: benchRaw})
						switch r {
						case 0:
							e.Observe(event.Event{Time: at, Client: c, Kind: event.KindDisconnect, Detail: "mail=1 rcpt=1 data=1 quit=1 commands=4", Raw: benchRaw})
						case 1:
							e.Observe(event.Event{Time: at, Client: c, Kind: event.KindLostConnection, Stage: "CONNECT", Raw: benchRaw})
						}
					}
				}
			})
			per = used / float64(st.Clients)
		}
		b.ReportMetric(per, "bytes/client")
	})
	b.Run("prefix", func(b *testing.B) {
		feed := func(e *Engine) {
			for r := range 14 {
				base := t0.Add(time.Duration(r) * 3 * time.Minute)
				for p := range n {
					a := netip.AddrFrom4([4]byte{byte(10 + p>>16), byte(p >> 8), byte(p), byte(1 + r%3)})
					e.Observe(event.Event{Time: base.Add(time.Duration(p) * time.Microsecond), Client: a, Kind: event.KindReject,
						Reason: event.ReasonUnknownRecipient, Stage: "RCPT", To: fmt.Sprintf("u%d@example.org", r), Abuse: true, Raw: benchRaw})
				}
			}
		}
		var per float64
		for b.Loop() {
			off := cfg
			off.Dictionary.PerPrefix = false
			without, _ := fill(b, off, feed)
			with, st := fill(b, cfg, feed)
			if st.Prefixes != n {
				b.Fatalf("tracked %d prefixes, want %d", st.Prefixes, n)
			}
			per = (with - without) / float64(st.Prefixes)
		}
		b.ReportMetric(per, "bytes/prefix")
	})
}

// TestContextEventsDoNotAllocate: the lines that are no evidence (most of
// a log) cost no allocation, whatever detectors are on. Evidence events
// clone their line once (kept for the decision).
func TestContextEventsDoNotAllocate(t *testing.T) {
	e, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Known clients and watched prefixes, so that the lookups happen. A
	// watched prefix counts accepted mail in a bounded window of its own:
	// made here, with the evidence.
	for i := range 100 {
		e.Observe(event.Event{Time: t0, Client: benchAddr(i), Kind: event.KindReject, Reason: event.ReasonUnknownRecipient,
			To: "x@example.org", Stage: "RCPT", Abuse: true, Raw: benchRaw})
		e.Observe(event.Event{Time: t0, Client: benchAddr(i), Kind: event.KindReceived, Raw: benchRaw})
	}
	for _, ev := range []event.Event{
		{Kind: event.KindConnect},
		{Kind: event.KindReceived},
		{Kind: event.KindSASLLogin, Detail: "alice@example.org"},
		{Kind: event.KindDisconnect, Detail: "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"},
		{Kind: event.KindPSPass},
		{Kind: event.KindQueued},
		{Kind: event.KindLostConnection, Stage: "DATA"},
		{Kind: event.KindReject, Reason: event.ReasonGreylisted, Stage: "RCPT", Code: 450},
		{Kind: event.KindHostnameMismatch, ClientName: "mail.example.net"},
		{Kind: event.KindTLSError, Stage: "STARTTLS", PID: 4242, Detail: "error:0A000126:SSL routines::unexpected eof while reading"},
	} {
		i := 0
		if ev.Kind == event.KindHostnameMismatch {
			i = 100 // for a client with a score it is evidence: new clients only
		}
		observe := func() {
			ev.Time = t0.Add(time.Duration(i) * time.Millisecond)
			ev.Client = benchAddr(i) // known clients first, then new ones
			ev.Raw = benchRaw
			e.Observe(ev)
			i++
		}
		// AllocsPerRun rounds down; count every allocation instead.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 1000 {
			observe()
		}
		runtime.ReadMemStats(&after)
		if n := after.Mallocs - before.Mallocs; n != 0 {
			t.Errorf("%s: %d allocations in 1000 events", ev.Kind, n)
		}
	}
}
