package sessions

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Sizes of the kernel's inet_diag structures (linux/inet_diag.h).
const (
	sockIDLen  = 48 // struct inet_diag_sockid
	reqV2Len   = 8 + sockIDLen
	diagMsgLen = 4 + sockIDLen + 20 // struct inet_diag_msg

	tcpEstablished = 1 // TCP_ESTABLISHED in the kernel's TCP state numbering
)

// Socket is one TCP socket from a SOCK_DIAG dump.
type Socket struct {
	Family uint8 // AF_INET or AF_INET6: the socket's own family
	Local  netip.AddrPort
	Remote netip.AddrPort
	// id is the raw inet_diag_sockid (ports, addresses, interface,
	// cookie) sent back unchanged in SOCK_DESTROY, so the kernel destroys
	// exactly the socket it reported and no later one reusing the tuple.
	id [sockIDLen]byte
}

func (s Socket) String() string {
	return fmt.Sprintf("tcp %s -> %s", s.Remote, s.Local)
}

// diagRequest encodes struct inet_diag_req_v2.
func diagRequest(family uint8, states uint32, id []byte) []byte {
	b := make([]byte, reqV2Len)
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:8], states)
	copy(b[8:], id)
	return b
}

// parseDiagMsg decodes struct inet_diag_msg. Ports and addresses are in
// network order; v4-mapped remote addresses of dual-stack sockets are
// kept as they are (the caller unmaps them for matching).
func parseDiagMsg(b []byte) (Socket, uint8, error) {
	if len(b) < diagMsgLen {
		return Socket{}, 0, fmt.Errorf("inet_diag_msg: %d bytes, want %d", len(b), diagMsgLen)
	}
	var s Socket
	s.Family = b[0]
	state := b[1]
	copy(s.id[:], b[4:4+sockIDLen])
	id := s.id[:]
	sport := binary.BigEndian.Uint16(id[0:2])
	dport := binary.BigEndian.Uint16(id[2:4])
	var src, dst netip.Addr
	switch s.Family {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(id[4:8]))
		dst = netip.AddrFrom4([4]byte(id[20:24]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(id[4:20]))
		dst = netip.AddrFrom16([16]byte(id[20:36]))
	default:
		return Socket{}, 0, fmt.Errorf("inet_diag_msg: family %d", s.Family)
	}
	s.Local = netip.AddrPortFrom(src, sport)
	s.Remote = netip.AddrPortFrom(dst, dport)
	return s, state, nil
}

// dumpEstablished lists the established TCP sockets of one family.
func dumpEstablished(c *netlink.Conn, family uint8) ([]Socket, error) {
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
		Data:   diagRequest(family, 1<<tcpEstablished, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag dump (family %d): %w", family, err)
	}
	socks := make([]Socket, 0, len(msgs))
	for _, m := range msgs {
		s, state, err := parseDiagMsg(m.Data)
		if err != nil {
			return nil, err
		}
		if state == tcpEstablished {
			socks = append(socks, s)
		}
	}
	return socks, nil
}

// destroy asks the kernel to close s (SOCK_DESTROY): the peer gets a
// reset and the owning process an error (ECONNABORTED) on its next call.
// A socket that closed meanwhile is not an error.
func destroy(c *netlink.Conn, s Socket) error {
	_, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.SOCK_DESTROY, Flags: netlink.Request | netlink.Acknowledge},
		Data:   diagRequest(s.Family, ^uint32(0), s.id[:]),
	})
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sock_destroy %s: %w", s, err)
	}
	return nil
}
