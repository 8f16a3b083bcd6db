package dnsserve

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// acceptAll accepts on ln until it is closed, holding every connection
// open (as a server waiting for the next query would).
func acceptAll(t *testing.T, ln net.Listener) {
	t.Helper()
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
}

// dialFrom connects from the loopback address from and reports whether
// the server kept the connection (true) or closed it at once (false).
func dialFrom(t *testing.T, to, from string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	return c, errors.Is(err, os.ErrDeadlineExceeded)
}

// Over its limits the listener closes a connection at once rather than
// leaving it in the backlog; trusted clients have slots of their own.
func TestListenerLimits(t *testing.T) {
	trusted := func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.9") }
	tests := []struct {
		name  string
		lim   TCPLimits
		dials []string // source addresses, in order
		kept  []bool
	}{
		{"per source", TCPLimits{Max: 10, PerSource: 2},
			[]string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"}, []bool{true, true, false, true}},
		{"shared pool", TCPLimits{Max: 2, PerSource: 4},
			[]string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, []bool{true, true, false}},
		{"trusted beside a full pool", TCPLimits{Max: 1, PerSource: 1, Trusted: trusted, TrustedMax: 2},
			[]string{"127.0.0.1", "127.0.0.2", "127.0.0.9", "127.0.0.9", "127.0.0.9"}, []bool{true, false, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, ln, err := Listen("127.0.0.1:0", tt.lim)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			acceptAll(t, ln)
			for i, from := range tt.dials {
				if _, kept := dialFrom(t, ln.Addr().String(), from); kept != tt.kept[i] {
					t.Errorf("connection %d from %s kept = %v, want %v", i, from, kept, tt.kept[i])
				}
			}
		})
	}
}

// A closed connection gives its slot back.
func TestListenerSlotReturned(t *testing.T) {
	pc, ln, err := Listen("127.0.0.1:0", TCPLimits{Max: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // a server: closes when the client does
				defer c.Close()
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	c, kept := dialFrom(t, ln.Addr().String(), "127.0.0.1")
	if !kept {
		t.Fatal("first connection not kept")
	}
	c.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, kept := dialFrom(t, ln.Addr().String(), "127.0.0.1"); kept {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection was not given back")
		}
	}
}

// Through a dns.Server, an untrusted connection gets the short idle
// timeout and a bound on its queries; a trusted one gets neither.
func TestUntrustedConnectionBounds(t *testing.T) {
	trusted := func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.9") }
	pc, ln, err := Listen("127.0.0.1:0", TCPLimits{Trusted: trusted, Idle: 100 * time.Millisecond, MaxQueries: 3})
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	srv := &dns.Server{Listener: ln, DecorateReader: ln.DecorateReader, IdleTimeout: func() time.Duration { return 10 * time.Second },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			_ = w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	defer srv.Shutdown()

	ask := func(c *dns.Conn) error {
		q := new(dns.Msg)
		q.SetQuestion("example.", dns.TypeA)
		if err := c.WriteMsg(q); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.ReadMsg()
		return err
	}
	dial := func(from string) *dns.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		nc, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return &dns.Conn{Conn: nc}
	}
	for _, tc := range []struct {
		from         string
		wantQueries  int // answered before the connection ends (of 5)
		survivesIdle bool
	}{
		{"127.0.0.1", 3, false},
		{"127.0.0.9", 5, true},
	} {
		c := dial(tc.from)
		n := 0
		for range 5 {
			if ask(c) != nil {
				break
			}
			n++
		}
		if n != tc.wantQueries {
			t.Errorf("%s: %d queries answered, want %d", tc.from, n, tc.wantQueries)
		}
		c = dial(tc.from)
		time.Sleep(300 * time.Millisecond)
		if survived := ask(c) == nil; survived != tc.survivesIdle {
			t.Errorf("%s: connection answered after 300 ms idle = %v, want %v", tc.from, survived, tc.survivesIdle)
		}
	}
}
