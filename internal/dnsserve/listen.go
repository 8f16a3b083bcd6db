// Package dnsserve holds what the DNSBL server and the peers' NOTIFY
// listener share: binding UDP and TCP on one address with a bound on TCP
// connections, and logging refusals without letting a client flood the log.
package dnsserve

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// MaxTCPConns bounds the untrusted TCP connections open at once: each
// holds a goroutine and buffers until its idle timeout, so many idle ones
// would otherwise use up memory.
const MaxTCPConns = 256

// Listen listens on UDP and TCP at the same address, the TCP listener
// keeping to lim. With port 0 the port the kernel picks for UDP may be
// taken for TCP, so it tries again.
func Listen(addr string, lim TCPLimits) (net.PacketConn, *Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("udp: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, newListener(ln, lim), nil
		}
		pc.Close()
		if port != "0" || try == 10 {
			return nil, nil, fmt.Errorf("tcp: %w", err)
		}
	}
}

// RefusalLog logs a kind of refusal (a zone transfer, a NOTIFY) at Warn
// at most once per Every, with the count of those not logged since: a
// client asking again and again must not flood the log.
type RefusalLog struct {
	Log   *slog.Logger
	Every time.Duration // 0: 10 s

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Warn logs msg with args unless one was logged less than Every ago.
func (r *RefusalLog) Warn(now time.Time, msg string, args ...any) {
	every := r.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "not_logged_since_last", n)
	}
	r.Log.Warn(msg, args...)
}
