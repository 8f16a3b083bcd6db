package dnsserve

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// Past the bound a TCP connection waits to be accepted until one closes.
func TestBothBoundsTCPConnections(t *testing.T) {
	pc, ln, err := Listen("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer ln.Close()
	if pc.LocalAddr().String() != ln.Addr().String() {
		t.Fatalf("udp %s, tcp %s: want one address", pc.LocalAddr(), ln.Addr())
	}
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted with a bound of 2")
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("the third connection was not accepted after one closed")
	}
}

// Refusals are logged once per Every, the next one with the count of
// those left out.
func TestRefusalLogOncePerInterval(t *testing.T) {
	var buf strings.Builder
	r := &RefusalLog{Log: slog.New(slog.NewTextHandler(&buf, nil)), Every: 10 * time.Second}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for i := range 100 {
		r.Warn(t0.Add(time.Duration(i)*50*time.Millisecond), "zone transfer refused", "client", "192.0.2.9")
	}
	r.Warn(t0.Add(11*time.Second), "zone transfer refused", "client", "192.0.2.9")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Contains(lines[0], "not_logged") || !strings.Contains(lines[1], "not_logged_since_last=99") {
		t.Fatalf("logged:\n%s", buf.String())
	}
}
