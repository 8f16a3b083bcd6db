// Package dnsserve holds what the DNSBL server and the peers' NOTIFY
// listener share: binding UDP and TCP on one address with a bound on TCP
// connections.
package dnsserve

import (
	"fmt"
	"net"
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
