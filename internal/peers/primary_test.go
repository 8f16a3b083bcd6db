package peers

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testPrimary is an in-process primary DNS server for one zone over TCP,
// with TSIG: every version of the zone is kept, so that it can answer an
// IXFR with the differences, with the whole zone, or with an error.
type testPrimary struct {
	t      testing.TB
	origin string
	addr   string
	srv    *dns.Server

	mu       sync.Mutex
	versions map[uint32][]dns.RR // serial → the records (without the SOA)
	serial   uint32
	ixfrMode string   // "incremental" (default), "full" or "refuse"
	queries  []string // "SOA 2", "AXFR 1", "IXFR 3", "refused"
	outErr   error    // how the last transfer's sending ended
}

const (
	testKeyName = "mx2-to-mx1."
	testSecret  = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM=" // 32 bytes
)

func startPrimary(t testing.TB, origin string, records ...string) *testPrimary {
	t.Helper()
	p := &testPrimary{t: t, origin: origin, versions: map[uint32][]dns.RR{}}
	p.set(1, records...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.srv = &dns.Server{Listener: ln, Net: "tcp", Handler: p, TsigSecret: map[string]string{testKeyName: testSecret}}
	started := make(chan struct{})
	p.srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = p.srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = p.srv.Shutdown() })
	return p
}

func (p *testPrimary) rr(s string) dns.RR {
	rr, err := dns.NewRR("$ORIGIN " + p.origin + "\n" + s)
	if err != nil {
		p.t.Fatalf("record %q: %v", s, err)
	}
	return rr
}

// set makes version serial of the zone from records in zone-file form
// (relative to the origin), and makes it current.
func (p *testPrimary) set(serial uint32, records ...string) {
	rrs := []dns.RR{p.rr("@ 3600 IN NS ns1.example.org.")}
	for _, r := range records {
		rrs = append(rrs, p.rr(r))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.versions[serial] = rrs
	p.serial = serial
}

func (p *testPrimary) setMode(m string) {
	p.mu.Lock()
	p.ixfrMode = m
	p.mu.Unlock()
}

func (p *testPrimary) log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.queries...)
}

func (p *testPrimary) soa(serial uint32) dns.RR {
	return p.rr(fmt.Sprintf("@ 3600 IN SOA ns1.example.org. hostmaster.example.org. %d 3600 600 86400 60", serial))
}

func (p *testPrimary) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	reply := new(dns.Msg)
	reply.SetReply(req)
	if req.IsTsig() == nil || w.TsigStatus() != nil {
		p.queries = append(p.queries, "refused")
		reply.Rcode = dns.RcodeNotAuth
		_ = w.WriteMsg(reply)
		return
	}
	q := req.Question[0]
	cur := p.versions[p.serial]
	var answer []dns.RR
	switch {
	case q.Qtype == dns.TypeSOA:
		p.queries = append(p.queries, fmt.Sprintf("SOA %d", p.serial))
		reply.Answer = []dns.RR{p.soa(p.serial)}
		reply.SetTsig(testKeyName, dns.HmacSHA256, 300, time.Now().Unix())
		_ = w.WriteMsg(reply)
		return
	case q.Qtype == dns.TypeAXFR:
		p.queries = append(p.queries, fmt.Sprintf("AXFR %d", p.serial))
		answer = append(append([]dns.RR{p.soa(p.serial)}, cur...), p.soa(p.serial))
	case q.Qtype == dns.TypeIXFR:
		from := req.Ns[0].(*dns.SOA).Serial
		p.queries = append(p.queries, fmt.Sprintf("IXFR %d", from))
		old, known := p.versions[from]
		switch {
		case from == p.serial:
			answer = []dns.RR{p.soa(p.serial)}
		case p.ixfrMode == "refuse":
			reply.Rcode = dns.RcodeRefused
			reply.SetTsig(testKeyName, dns.HmacSHA256, 300, time.Now().Unix())
			_ = w.WriteMsg(reply)
			return
		case p.ixfrMode == "full" || !known:
			answer = append(append([]dns.RR{p.soa(p.serial)}, cur...), p.soa(p.serial))
		default:
			del, add := diff(old, cur)
			answer = []dns.RR{p.soa(p.serial), p.soa(from)}
			answer = append(answer, del...)
			answer = append(answer, p.soa(p.serial))
			answer = append(answer, add...)
			answer = append(answer, p.soa(p.serial))
		}
	default:
		reply.Rcode = dns.RcodeRefused
		_ = w.WriteMsg(reply)
		return
	}
	ch := make(chan *dns.Envelope)
	tr := new(dns.Transfer)
	done := make(chan error, 1)
	go func() { done <- tr.Out(w, req, ch) }()
	var outErr error
send:
	for len(answer) > 0 { // several messages, like a real server
		n := min(len(answer), 500)
		for n > 1 && msgSize(answer[:n]) > 60000 { // within 64 KiB
			n /= 2
		}
		select {
		case ch <- &dns.Envelope{RR: answer[:n]}:
		case outErr = <-done: // the client went away
			break send
		}
		answer = answer[n:]
	}
	close(ch)
	if outErr == nil {
		outErr = <-done
	}
	p.outErr = outErr
}

func msgSize(rrs []dns.RR) int {
	n := 0
	for _, rr := range rrs {
		n += dns.Len(rr)
	}
	return n
}

// lastOutErr waits for the transfer being sent and says how it ended.
func (p *testPrimary) lastOutErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outErr
}

func diff(old, cur []dns.RR) (del, add []dns.RR) {
	in := func(rr dns.RR, set []dns.RR) bool {
		for _, x := range set {
			if dns.IsDuplicate(rr, x) {
				return true
			}
		}
		return false
	}
	for _, rr := range old {
		if !in(rr, cur) {
			del = append(del, rr)
		}
	}
	for _, rr := range cur {
		if !in(rr, old) {
			add = append(add, rr)
		}
	}
	return del, add
}
