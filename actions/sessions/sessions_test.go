package sessions

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/mxguard/mxguard/actions/ban"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = valid
	}{
		{"default", DefaultConfig(), ""},
		{"disabled without ports", Config{}, ""},
		{"enabled without ports", Config{Enabled: true}, "ports: empty"},
		{"port 0", Config{Enabled: true, Ports: []int{0}}, "0 is not a TCP port"},
		{"port too big", Config{Enabled: true, Ports: []int{25, 65536}}, "65536 is not a TCP port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

// diagMsg builds an inet_diag_msg as the kernel sends it.
func diagMsg(family, state uint8, local, remote netip.AddrPort, cookie uint64) []byte {
	b := make([]byte, diagMsgLen)
	b[0], b[1] = family, state
	id := b[4 : 4+sockIDLen]
	binary.BigEndian.PutUint16(id[0:2], local.Port())
	binary.BigEndian.PutUint16(id[2:4], remote.Port())
	if family == unix.AF_INET {
		a, r := local.Addr().As4(), remote.Addr().As4()
		copy(id[4:], a[:])
		copy(id[20:], r[:])
	} else {
		a, r := local.Addr().As16(), remote.Addr().As16()
		copy(id[4:], a[:])
		copy(id[20:], r[:])
	}
	binary.NativeEndian.PutUint64(id[40:48], cookie)
	return b
}

func TestParseDiagMsg(t *testing.T) {
	cases := []struct {
		family         uint8
		local, remote  string
		wantRemoteAddr string // after Unmap
	}{
		{unix.AF_INET, "192.0.2.1:25", "198.51.100.7:40000", "198.51.100.7"},
		{unix.AF_INET6, "[2001:db8::1]:587", "[2001:db8::2]:50000", "2001:db8::2"},
		{unix.AF_INET6, "[::ffff:192.0.2.1]:465", "[::ffff:198.51.100.7]:1234", "198.51.100.7"},
	}
	for _, tc := range cases {
		t.Run(tc.remote, func(t *testing.T) {
			local, remote := netip.MustParseAddrPort(tc.local), netip.MustParseAddrPort(tc.remote)
			msg := diagMsg(tc.family, tcpEstablished, local, remote, 0xdeadbeef01)
			s, state, err := parseDiagMsg(msg)
			if err != nil {
				t.Fatal(err)
			}
			if state != tcpEstablished || s.Family != tc.family || s.Local != local || s.Remote != remote {
				t.Errorf("got %+v state %d, want %s -> %s family %d", s, state, remote, local, tc.family)
			}
			if got := s.Remote.Addr().Unmap().String(); got != tc.wantRemoteAddr {
				t.Errorf("remote unmapped %s, want %s", got, tc.wantRemoteAddr)
			}
			// The destroy request carries the socket id unchanged, cookie included.
			req := diagRequest(s.Family, ^uint32(0), s.id[:])
			if len(req) != reqV2Len || req[0] != tc.family || req[1] != unix.IPPROTO_TCP {
				t.Fatalf("request header % x", req[:8])
			}
			if string(req[8:]) != string(msg[4:4+sockIDLen]) {
				t.Errorf("request id % x, want % x", req[8:], msg[4:4+sockIDLen])
			}
		})
	}
	if _, _, err := parseDiagMsg(make([]byte, diagMsgLen-1)); err == nil {
		t.Error("a short message parsed")
	}
	if _, _, err := parseDiagMsg(diagMsg(unix.AF_UNIX, 1, netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2"), 0)); err == nil {
		t.Error("an AF_UNIX message parsed")
	}
}

// An invalid prefix is refused before any netlink call.
func TestApplyRejectsInvalidPrefix(t *testing.T) {
	k, err := New(DefaultConfig(), Options{Dial: func() (*netlink.Conn, error) {
		t.Error("dialled netlink for an invalid prefix")
		return nil, errors.New("no netlink here")
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("0.0.0.0/0"), netip.PrefixFrom(netip.MustParseAddr("192.0.2.1"), 24)} {
		if err := k.Apply(context.Background(), ban.Ban{Prefix: p}); !errors.Is(err, ban.ErrInvalidPrefix) {
			t.Errorf("Apply(%s): %v, want ErrInvalidPrefix", p, err)
		}
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New(Config{Enabled: true}, Options{}); err == nil {
		t.Error("New accepted an enabled config without ports")
	}
}
