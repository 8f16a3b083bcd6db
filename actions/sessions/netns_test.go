package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/netnstest"
)

// sessionHost is a server namespace with listeners that hold every
// accepted connection open, and a client namespace with several source
// addresses: 192.0.2.2 and .3 (one /24), 198.51.100.2 (another /24) and
// 2001:db8::2.
type sessionHost struct {
	server, client string

	mu       sync.Mutex
	accepted map[string]chan error // client address:port -> the server side's read error
}

func newSessionHost(t testing.TB) *sessionHost {
	netnstest.Require(t)
	h := &sessionHost{accepted: map[string]chan error{}}
	h.server, h.client = netnstest.Pair(t)
	netnstest.Run(t, "ip", "-n", h.client, "addr", "add", "192.0.2.3/24", "dev", "mxgc")
	netnstest.Run(t, "ip", "-n", h.server, "addr", "add", "198.51.100.1/24", "dev", "mxgs")
	netnstest.Run(t, "ip", "-n", h.client, "addr", "add", "198.51.100.2/24", "dev", "mxgc")
	for _, l := range [][2]string{
		{"tcp4", "0.0.0.0:25"},
		{"tcp6", "[::]:25"}, // IPv6 only
		{"tcp", ":465"},     // dual stack: IPv4 clients on IPv6 sockets, v4-mapped
		{"tcp4", "0.0.0.0:2525"},
	} {
		h.listen(t, l[0], l[1])
	}
	return h
}

func (h *sessionHost) listen(t testing.TB, network, addr string) {
	var ln net.Listener
	if err := netnstest.Do(h.server, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			done := make(chan error, 1)
			remote := netip.MustParseAddrPort(c.RemoteAddr().String())
			h.mu.Lock()
			h.accepted[netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()).String()] = done
			h.mu.Unlock()
			go func() {
				defer c.Close()
				_, err := c.Read(make([]byte, 1))
				done <- err
			}()
		}
	}()
}

// serverSide is the read error channel of the server's end of c.
func (h *sessionHost) serverSide(t testing.TB, c net.Conn) chan error {
	t.Helper()
	key := c.LocalAddr().String()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		ch := h.accepted[key]
		h.mu.Unlock()
		if ch != nil {
			return ch
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("server never accepted %s", key)
	return nil
}

// dial opens a connection from the client namespace, from local to remote.
func (h *sessionHost) dial(t testing.TB, local, remote string) net.Conn {
	t.Helper()
	var c net.Conn
	err := netnstest.Do(h.client, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err = d.Dial("tcp", remote)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s -> %s: %v", local, remote, err)
	}
	t.Cleanup(func() { c.Close() })
	h.serverSide(t, c) // accepted: established on both ends
	return c
}

func (h *sessionHost) killer(t testing.TB, cfg Config, dry *bytes.Buffer) *Killer {
	t.Helper()
	opts := Options{Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})), Dial: func() (*netlink.Conn, error) {
		var c *netlink.Conn
		err := netnstest.Do(h.server, func() (err error) {
			c, err = netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
			return err
		})
		return c, err
	}}
	if dry != nil {
		opts.DryRun = dry
	}
	k, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testLog writes log lines to the test's log.
type testLog struct{ t testing.TB }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// closedWithin reports whether the client end of c sees its connection
// end (reset or EOF) before the deadline, rather than a timeout.
func closedWithin(c net.Conn, deadline time.Time) (bool, error) {
	c.SetReadDeadline(deadline)
	_, err := c.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, err
	}
	return true, err
}

type conn struct {
	local, remote string
	killed        bool
}

// TestNetnsKillSessions bans a prefix and checks which established
// connections the client sees closed within 1 s: exactly those from the
// prefix to a protected port, over IPv4, IPv6 and dual-stack listeners.
func TestNetnsKillSessions(t *testing.T) {
	cases := []struct {
		name   string
		prefix string
		conns  []conn
	}{
		{"host v4", "192.0.2.2/32", []conn{
			{"192.0.2.2", "192.0.2.1:25", true},
			{"192.0.2.2", "192.0.2.1:25", true},
			{"192.0.2.2", "192.0.2.1:465", true}, // v4-mapped on a dual-stack socket
			{"192.0.2.3", "192.0.2.1:25", false},
			{"192.0.2.2", "192.0.2.1:2525", false}, // not a protected port
			{"2001:db8::2", "[2001:db8::1]:25", false},
		}},
		{"prefix v4", "192.0.2.0/24", []conn{
			{"192.0.2.2", "192.0.2.1:25", true},
			{"192.0.2.3", "192.0.2.1:25", true},
			{"192.0.2.3", "192.0.2.1:465", true},
			{"198.51.100.2", "198.51.100.1:25", false},
			{"192.0.2.3", "192.0.2.1:2525", false},
			{"2001:db8::2", "[2001:db8::1]:465", false},
		}},
		{"host v6", "2001:db8::2/128", []conn{
			{"2001:db8::2", "[2001:db8::1]:25", true},
			{"2001:db8::2", "[2001:db8::1]:465", true},
			{"192.0.2.2", "192.0.2.1:25", false},
			{"192.0.2.2", "192.0.2.1:465", false},
		}},
	}
	h := newSessionHost(t)
	k := h.killer(t, Config{Enabled: true, Ports: []int{25, 465, 587}}, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conns := make([]net.Conn, len(tc.conns))
			for i, c := range tc.conns {
				conns[i] = h.dial(t, c.local, c.remote)
			}
			start := time.Now()
			if err := k.Apply(context.Background(), ban.Ban{Prefix: netip.MustParsePrefix(tc.prefix)}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			// Every client end waits at once: a read started after the
			// deadline would report a timeout without looking.
			type outcome struct {
				closed bool
				err    error
				after  time.Duration
			}
			deadline := start.Add(time.Second)
			outcomes := make([]outcome, len(conns))
			var wg sync.WaitGroup
			for i, c := range conns {
				wg.Go(func() {
					closed, err := closedWithin(c, deadline)
					outcomes[i] = outcome{closed, err, time.Since(start)}
				})
			}
			wg.Wait()
			var slowest time.Duration
			for i, c := range tc.conns {
				o := outcomes[i]
				if o.closed != c.killed {
					t.Errorf("%s -> %s: closed %v (%v), want closed %v", c.local, c.remote, o.closed, o.err, c.killed)
				}
				if !o.closed {
					continue
				}
				slowest = max(slowest, o.after)
				if !errors.Is(o.err, unix.ECONNRESET) {
					t.Errorf("%s -> %s: client got %v, want a reset", c.local, c.remote, o.err)
				}
				select {
				case err := <-h.serverSide(t, conns[i]):
					if !errors.Is(err, unix.ECONNABORTED) {
						t.Errorf("%s -> %s: server side got %v, want ECONNABORTED", c.local, c.remote, err)
					}
				case <-time.After(time.Second):
					t.Errorf("%s -> %s: server side still open", c.local, c.remote)
				}
			}
			t.Logf("ban %s: the last killed session closed %v after Apply began", tc.prefix, slowest)
		})
	}
}

// A dry run lists the sessions it would close and closes none.
func TestNetnsKillSessionsDryRun(t *testing.T) {
	h := newSessionHost(t)
	var out bytes.Buffer
	k := h.killer(t, DefaultConfig(), &out)
	c := h.dial(t, "192.0.2.2", "192.0.2.1:25")
	if err := k.Apply(context.Background(), ban.Ban{Prefix: netip.MustParsePrefix("192.0.2.2/32")}); err != nil {
		t.Fatal(err)
	}
	if closed, err := closedWithin(c, time.Now().Add(300*time.Millisecond)); closed {
		t.Errorf("dry run closed the session: %v", err)
	}
	want := "kill_sessions: would close tcp " + c.LocalAddr().String() + " -> 192.0.2.1:25\n"
	if out.String() != want {
		t.Errorf("dry-run output %q, want %q", out.String(), want)
	}
	out.Reset()
	if err := k.Apply(context.Background(), ban.Ban{Prefix: netip.MustParsePrefix("192.0.2.3/32")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "(none open now)") {
		t.Errorf("dry-run output for a prefix without sessions: %q", out.String())
	}
}

// BenchmarkNetnsKillSession measures one ban's Apply until the client
// sees its reset, with one session from the banned address among ten kept
// ones from a neighbour (the dials are not timed).
func BenchmarkNetnsKillSession(b *testing.B) {
	h := newSessionHost(b)
	k := h.killer(b, DefaultConfig(), nil)
	for range 10 {
		h.dial(b, "192.0.2.3", "192.0.2.1:25")
	}
	banned := ban.Ban{Prefix: netip.MustParsePrefix("192.0.2.2/32")}
	for b.Loop() {
		b.StopTimer()
		c := h.dial(b, "192.0.2.2", "192.0.2.1:25")
		b.StartTimer()
		if err := k.Apply(context.Background(), banned); err != nil {
			b.Fatal(err)
		}
		if closed, err := closedWithin(c, time.Now().Add(time.Second)); !closed {
			b.Fatalf("session still open 1 s after Apply: %v", err)
		}
	}
}

// Without CAP_NET_ADMIN the kernel refuses SOCK_DESTROY: Apply warns once,
// succeeds (a retry cannot help) and the session stays open.
func TestNetnsKillSessionsWithoutCapability(t *testing.T) {
	h := newSessionHost(t)
	var logs bytes.Buffer
	k := h.killer(t, DefaultConfig(), nil)
	k.log = slog.New(slog.NewTextHandler(&logs, nil))
	c := h.dial(t, "192.0.2.2", "192.0.2.1:25")
	banned := ban.Ban{Prefix: netip.MustParsePrefix("192.0.2.2/32")}
	for range 2 {
		if err := withoutNetAdmin(func() error { return k.Apply(context.Background(), banned) }); err != nil {
			t.Fatalf("Apply: %v, want nil (nothing a retry could fix)", err)
		}
	}
	if closed, err := closedWithin(c, time.Now().Add(300*time.Millisecond)); closed {
		t.Errorf("session closed without CAP_NET_ADMIN: %v", err)
	}
	if n := strings.Count(logs.String(), "needs CAP_NET_ADMIN"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
}

// withoutNetAdmin runs fn on a thread without CAP_NET_ADMIN: the kernel
// checks the sender's capabilities when the netlink request is sent, and
// a goroutine locked to its thread makes its system calls there.
// Capabilities belong to the thread, which is never unlocked, so Go
// throws it away afterwards.
func withoutNetAdmin(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
