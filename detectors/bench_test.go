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
