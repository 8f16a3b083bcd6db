// Package netnstest makes network namespaces for tests that need root:
// every firewall change and every banned client lives in namespaces the
// test creates and deletes, so the host's own tables are never touched.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Require skips unless we are root and the programs exist.
func Require(tb testing.TB, progs ...string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("skipping namespace test in -short mode")
	}
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	for _, p := range append([]string{"ip"}, progs...) {
		if _, err := exec.LookPath(p); err != nil {
			tb.Skipf("skipping: %s not installed (apt-get install iproute2 iptables ipset)", p)
		}
	}
}

func Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// New creates a namespace mxg-test-XXXXXXXX, deleted at cleanup.
func New(tb testing.TB) string {
	tb.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := "mxg-test-" + hex.EncodeToString(b[:])
	Run(tb, "ip", "netns", "add", ns)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v %s", ns, err, out)
		}
	})
	Run(tb, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// Wrapper writes a script that runs prog inside ns, for
// a program path setting such as firewall.IPTablesChainConfig.IPTablesPath (go-iptables wants one program path).
func Wrapper(tb testing.TB, ns, prog string) string {
	tb.Helper()
	real, err := exec.LookPath(prog)
	if err != nil {
		tb.Skipf("skipping: %s not installed", prog)
	}
	p := filepath.Join(tb.TempDir(), prog+"-"+ns)
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns, real)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Do runs fn on an OS thread that has entered ns. Sockets created
// in fn belong to ns for their whole life. The thread is never unlocked,
// so Go throws it away when the goroutine ends.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Pair makes two namespaces joined by a veth pair: server has
// 192.0.2.1 and 2001:db8::1, client 192.0.2.2 and 2001:db8::2.
func Pair(tb testing.TB) (server, client string) {
	tb.Helper()
	server, client = New(tb), New(tb)
	Run(tb, "ip", "link", "add", "mxgs", "netns", server, "type", "veth", "peer", "name", "mxgc", "netns", client)
	for _, s := range []struct{ ns, dev, v4, v6 string }{
		{server, "mxgs", "192.0.2.1/24", "2001:db8::1/64"},
		{client, "mxgc", "192.0.2.2/24", "2001:db8::2/64"},
	} {
		Run(tb, "ip", "-n", s.ns, "addr", "add", s.v4, "dev", s.dev)
		Run(tb, "ip", "-n", s.ns, "-6", "addr", "add", s.v6, "dev", s.dev, "nodad")
		Run(tb, "ip", "-n", s.ns, "link", "set", s.dev, "up")
	}
	return server, client
}

// Listen serves TCP on addr inside ns: accept and close.
func Listen(tb testing.TB, ns, network, addr string) {
	tb.Helper()
	var ln net.Listener
	if err := Do(ns, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		tb.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// Dial connects n times from ns to addr, each with timeout.
func Dial(ns, network, addr string, timeout time.Duration, n int) error {
	return Do(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		for range n {
			c, err := d.Dial(network, addr)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
}

// ExpectDial checks the outcome of one connect: "ok", "timeout"
// (DROP) or "refused" (REJECT with tcp-reset).
func ExpectDial(t *testing.T, ns, network, addr, want string) {
	t.Helper()
	err := Dial(ns, network, addr, time.Second, 1)
	var ne net.Error
	got := "ok"
	switch {
	case err == nil:
	case errors.Is(err, syscall.ECONNREFUSED):
		got = "refused"
	case errors.As(err, &ne) && ne.Timeout():
		got = "timeout"
	default:
		got = err.Error()
	}
	if got != want {
		t.Errorf("connect %s %s: got %s (%v), want %s", network, addr, got, err, want)
	}
}
