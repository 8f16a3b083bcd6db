package smtpguard

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// An upstream that does not complete the TCP handshake (its accept queue
// is full: the kernel drops the SYN) costs the guard upstream_timeout, not
// the kernel's minutes of SYN retries, with an address and with a name.
func TestDialUpstreamTimeout(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // never accepted
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	// Fill the accept queue until a connect hangs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond)
		if err != nil {
			break
		}
		defer c.Close()
		if i > 64 {
			t.Skip("the accept queue never filled up")
		}
	}
	for _, addr := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		const timeout = 300 * time.Millisecond
		cfg := testConfig(addr)
		cfg.Limits.UpstreamTimeout = Duration(timeout)
		start := time.Now()
		u, err := connectUpstream(&cfg)
		el := time.Since(start)
		if err == nil {
			u.abort()
			t.Fatalf("%s: connected to a full accept queue", addr)
		}
		if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
			t.Errorf("%s: %v, want a timeout", addr, err)
		}
		if el < timeout || el > timeout+time.Second {
			t.Errorf("%s: gave up after %s, want about %s", addr, el, timeout)
		}
	}
}
