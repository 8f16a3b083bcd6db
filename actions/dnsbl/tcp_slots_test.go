package dnsbl

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/dnsserve"
)

// Clients holding idle TCP connections fill the shared pool, one client
// no more than its share; a secondary still transfers the zone.
func TestIdleClientsDoNotStallTransfers(t *testing.T) {
	cfg := xfrConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Secondaries = []string{"127.0.0.9:9"} // may transfer; NOTIFY goes nowhere
	p, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()
	dialFrom := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	kept := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		ne, ok := err.(net.Error)
		return ok && ne.Timeout()
	}
	// one greedy client gets its share only
	var first []net.Conn
	for range dnsserve.MaxTCPPerSource + 1 {
		first = append(first, dialFrom("127.0.1.1"))
	}
	if kept(first[len(first)-1]) {
		t.Fatalf("a client kept more than %d connections", dnsserve.MaxTCPPerSource)
	}
	// many clients fill the pool
	for i := 2; i < 2+dnsserve.MaxTCPConns/dnsserve.MaxTCPPerSource; i++ {
		for range dnsserve.MaxTCPPerSource {
			dialFrom(fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250))
		}
	}
	if kept(dialFrom("127.0.3.1")) {
		t.Fatal("a connection past the shared pool was kept")
	}
	// the secondary transfers all the same
	tr := &dns.Transfer{Conn: &dns.Conn{Conn: dialFrom("127.0.0.9")}, TsigSecret: map[string]string{"xfr-key.": testSecret}}
	m := new(dns.Msg)
	m.SetAxfr(p.zone)
	m.SetTsig("xfr-key.", dns.HmacSHA256, 300, time.Now().Unix())
	ch, err := tr.In(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for env := range ch {
		if env.Error != nil {
			t.Fatalf("AXFR by the secondary with the pool full: %v", env.Error)
		}
		n += len(env.RR)
	}
	if n < 2 {
		t.Fatalf("AXFR gave %d records, want the SOA at both ends at least", n)
	}
}
