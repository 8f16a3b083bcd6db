package policy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Whoever can write the socket's directory (/var/spool/postfix/private is
// postfix's) may swap the new socket for a symlink at any moment: root
// must never chmod or chown what the symlink points to.
func TestListenNeverChownsThroughASymlink(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the attack is root chowning a file it should not")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "shadow")
	if err := os.WriteFile(target, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "mxguard")
	cfg := testConfig(t)
	cfg.Listen, cfg.Owner, cfg.Group, cfg.Mode = "unix:"+sock, "nobody", "nogroup", "0660"
	s, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		os.Remove(sock)
		var stop atomic.Bool
		done := make(chan struct{})
		go func() { // the directory's owner, swapping as soon as a socket appears
			defer close(done)
			for !stop.Load() {
				if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
					os.Remove(sock)
					os.Symlink(target, sock)
					return
				}
			}
		}()
		l, _ := s.Listen()
		stop.Store(true)
		<-done
		if l != nil {
			l.Close()
		}
		var st syscall.Stat_t
		if err := syscall.Stat(target, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 || st.Mode&0o777 != 0o600 {
			t.Fatalf("attempt %d: the symlink's target is now uid %d mode %o", i, st.Uid, st.Mode&0o777)
		}
	}
	if fi, err := os.Lstat(target); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("target: %v %v", fi, err)
	}
}

// The socket has its owner and mode when it appears under its name; a
// symlink or a file at the path is refused, not followed.
func TestListenSocketPermsAndWhatIsAtThePath(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		prepare func(path string)
		wantErr string
	}{
		{"nothing there", func(string) {}, ""},
		{"a stale socket", func(p string) {
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}, ""},
		{"a symlink", func(p string) { os.Symlink(target, p) }, "not a socket"},
		{"a file", func(p string) { os.WriteFile(p, nil, 0o600) }, "not a socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "mxguard")
			tc.prepare(sock)
			cfg := testConfig(t)
			cfg.Listen, cfg.Mode = "unix:"+sock, "0666"
			if os.Getuid() == 0 {
				cfg.Owner = "nobody"
			}
			s, err := New(cfg, Deps{})
			if err != nil {
				t.Fatal(err)
			}
			l, err := s.Listen()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
					t.Fatalf("target mode changed to %v", fi.Mode().Perm())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fi, err := os.Lstat(sock)
			if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
				t.Fatalf("socket %v %v, want a socket with mode 0666", fi, err)
			}
			if os.Getuid() == 0 && fi.Sys().(*syscall.Stat_t).Uid != 65534 {
				t.Fatalf("socket uid %d, want nobody's", fi.Sys().(*syscall.Stat_t).Uid)
			}
			if l.Addr().String() != sock {
				t.Fatalf("Addr %q, want %q", l.Addr(), sock)
			}
			if ents, _ := os.ReadDir(filepath.Dir(sock)); len(ents) != 1 {
				t.Fatalf("the private directory is left behind: %v", ents)
			}
		})
	}
}

// A socket another process answers on is refused: a typo in listen must
// not take over e.g. private/rewrite.
func TestListenRefusesALiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live")
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cfg := testConfig(t)
	cfg.Listen = "unix:" + path
	s, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Listen()
	if err == nil {
		l.Close()
		t.Fatal("Listen took over a socket another process listens on")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Fatalf("err %v, want 'in use'", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("the other process's socket is gone: %v", err)
	} else {
		c.Close()
	}
}

// Close removes our socket, but not a file that replaced it since.
func TestListenerCloseRemovesOnlyItsOwnSocket(t *testing.T) {
	for _, replaced := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "mxguard")
		cfg := testConfig(t)
		cfg.Listen = "unix:" + path
		s, err := New(cfg, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := s.Listen()
		if err != nil {
			t.Fatal(err)
		}
		if replaced {
			os.Remove(path)
			if err := os.WriteFile(path, []byte("someone else's"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		_, err = os.Lstat(path)
		if exists := err == nil; exists != replaced {
			t.Fatalf("replaced=%v: file exists after Close = %v", replaced, exists)
		}
	}
}

// askTCP sends n requests over TCP and reads their answers; it reports
// whether the server answered at all.
func askTCP(t *testing.T, addr string, n int, raw string) bool {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for range n {
		if _, err := io.WriteString(c, raw); err != nil {
			return false
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if _, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "action=") {
			return false
		}
	}
	// a barrier: the events of the requests above are sent before this
	// one is read
	io.WriteString(c, req("client_address", "flush"))
	br.ReadString('\n')
	br.ReadString('\n')
	return true
}

// Any local process can connect to a TCP port and name any
// client_address: over inet findings are answered but are evidence only
// with inet_evidence; peers outside allow_peers are closed at once.
func TestInetPeersAndEvidence(t *testing.T) {
	victim := netip.MustParseAddr("203.0.113.7")
	for _, tc := range []struct {
		name         string
		allowPeers   []string
		inetEvidence bool
		answered     bool
		wantAbuse    int
	}{
		{"default: loopback asks, no evidence", nil, false, true, 0},
		{"inet_evidence on", nil, true, true, 3},
		{"peer not in allow_peers", []string{"192.0.2.0/24"}, true, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Listen = "inet:127.0.0.1:0"
			cfg.InetEvidence = tc.inetEvidence
			if tc.allowPeers != nil {
				cfg.AllowPeers = tc.allowPeers
			}
			ev := &events{}
			s, err := New(cfg, Deps{Sink: ev.sink, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			l, err := s.Listen()
			if err != nil {
				t.Fatal(err)
			}
			go s.Serve(context.Background(), l)
			defer s.Shutdown(context.Background())
			answered := askTCP(t, l.Addr().String(), 3, req("client_address", victim.String(), "helo_name", "localhost"))
			if answered != tc.answered {
				t.Fatalf("answered %v, want %v", answered, tc.answered)
			}
			abuse, seen := 0, 0
			for _, e := range ev.all() {
				if e.Client == victim {
					seen++
					if e.Abuse {
						abuse++
					}
				}
			}
			if abuse != tc.wantAbuse {
				t.Fatalf("%d evidence events against %s, want %d", abuse, victim, tc.wantAbuse)
			}
			if tc.answered && seen != 3 {
				t.Fatalf("%d events, want 3 (findings are still logged)", seen)
			}
			if !tc.answered && s.Stats().Denied != 1 {
				t.Fatalf("Denied = %d, want 1", s.Stats().Denied)
			}
		})
	}
}

// Over a unix socket only the allowed users (SO_PEERCRED) may ask.
func TestUnixPeerCredentials(t *testing.T) {
	for _, allowed := range []bool{true, false} {
		cfg := testConfig(t)
		s, err := New(cfg, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if !allowed {
			s.peerUIDs = map[uint32]bool{uint32(os.Geteuid()) + 1: true} // anyone but us
		}
		l, err := s.Listen()
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(context.Background(), l)
		defer s.Shutdown(context.Background())
		c := dial(t, l.Addr().String())
		a, err := c.ask(req())
		if allowed && (err != nil || a != "DUNNO") {
			t.Fatalf("allowed peer: %q %v", a, err)
		}
		if !allowed && (err == nil || s.Stats().Denied != 1) {
			t.Fatalf("peer not allowed: answered %q, Denied %d", a, s.Stats().Denied)
		}
	}
}

// The default peers: root, our own user, owner, peer_users.
func TestPeerUIDs(t *testing.T) {
	cfg := testConfig(t)
	cfg.PeerUsers = []string{"nobody", "4242"}
	m, err := cfg.peerUIDs(1234)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []uint32{0, uint32(os.Geteuid()), 1234, 65534, 4242} {
		if !m[uid] {
			t.Errorf("uid %d not allowed: %v", uid, m)
		}
	}
	if len(m) > 5 {
		t.Errorf("more allowed than configured: %v", m)
	}
	cfg.PeerUsers = []string{"no-such-user-mxguard"}
	if _, err := cfg.peerUIDs(-1); err == nil || !strings.Contains(err.Error(), "policy.peer_users") {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestConfigWarnings(t *testing.T) {
	for _, tc := range []struct {
		listen   string
		evidence bool
		want     []string
	}{
		{"unix:/var/spool/postfix/private/mxguard", false, nil},
		{"inet:127.0.0.1:10040", false, nil},
		{"inet:[::1]:10040", false, nil},
		{"inet:localhost:10040", false, nil},
		{"inet:mx.example:10040", false, []string{"listen:"}},
		{"inet:0.0.0.0:10040", false, []string{"listen:"}},
		{"inet:192.0.2.1:10040", true, []string{"listen:", "inet_evidence:"}},
		{"inet:127.0.0.1:10040", true, []string{"inet_evidence:"}},
	} {
		cfg := testConfig(t)
		cfg.Enabled, cfg.Listen, cfg.InetEvidence = true, tc.listen, tc.evidence
		ws := cfg.Warnings()
		if len(ws) != len(tc.want) {
			t.Fatalf("%s: warnings %q, want %d", tc.listen, ws, len(tc.want))
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(ws[i], w) {
				t.Errorf("%s: warning %q, want it to start with %q", tc.listen, ws[i], w)
			}
		}
	}
}
