package daemon

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/duration"
	"github.com/mxguard/mxguard/internal/netnstest"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/tsig"
)

const (
	knotKey       = "mx2-to-mx1."
	knotSecret    = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="
	knotWrong     = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc="
	knotGoodZone  = "bl.mx2.example.org"
	knotOtherZone = "bl.mx3.example.org"
)

// knotPrimary is a real Knot DNS primary (knotd) on loopback, serving
// peer zones from zone files, with IXFR from the files' differences.
type knotPrimary struct {
	dir, addr, sock string
	cmd             *exec.Cmd
}

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func knotZoneFile(serial int, entries ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$TTL 60\n@ SOA ns1.example.org. hostmaster.example.org. %d 3600 600 86400 60\n@ NS ns1.example.org.\n", serial)
	b.WriteString("2.0.0.127 A 127.0.0.2\n2.0.0.127 TXT \"RFC 5782 test entry\"\n")
	for _, e := range entries {
		b.WriteString(e + "\n")
	}
	return b.String()
}

func startKnot(t *testing.T, notifyTo string) *knotPrimary {
	t.Helper()
	k := &knotPrimary{dir: t.TempDir(), addr: freeAddr(t)}
	k.sock = filepath.Join(k.dir, "knot.sock")
	host, port, _ := net.SplitHostPort(k.addr)
	nhost, nport, _ := net.SplitHostPort(notifyTo)
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: %[2]s@%[3]s
control:
    listen: "%[4]s"
database:
    storage: "%[1]s/db"
log:
  - target: stderr
    any: info
key:
  - id: %[5]s
    algorithm: hmac-sha256
    secret: %[6]s
remote:
  - id: mx1
    address: %[7]s@%[8]s
    key: %[5]s
acl:
  - id: mx1-transfer
    address: 127.0.0.1
    key: %[5]s
    action: transfer
template:
  - id: default
    storage: "%[1]s"
    zonefile-sync: -1
    zonefile-load: difference
    journal-content: changes
    notify: mx1
    acl: mx1-transfer
zone:
  - domain: %[9]s
  - domain: %[10]s
`, k.dir, host, port, k.sock, knotKey, knotSecret, nhost, nport, knotGoodZone, knotOtherZone)
	if err := os.Mkdir(filepath.Join(k.dir, "db"), 0o700); err != nil { // knotd keeps its journal there
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.dir, "knot.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	k.writeZone(t, knotGoodZone, knotZoneFile(1, "9.100.51.198 A 127.0.0.2"))
	k.writeZone(t, knotOtherZone, knotZoneFile(1, "3.2.0.192 A 127.0.0.2"))
	cmd := exec.Command("knotd", "-c", filepath.Join(k.dir, "knot.conf"))
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("knotd: %v", err)
	}
	k.cmd = cmd
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			t.Logf("knotd's log:\n%s", log)
		}
	})
	waitFor(t, "knotd to load the zones", 5*time.Second, func() bool {
		out, err := exec.Command("knotc", "-s", k.sock, "zone-status", knotGoodZone).CombinedOutput()
		return err == nil && strings.Contains(string(out), "serial: 1")
	}, log)
	return k
}

// stop ends the knotd this test started.
func (k *knotPrimary) stop() {
	if k.cmd.ProcessState == nil {
		_ = k.cmd.Process.Kill()
		_ = k.cmd.Wait()
	}
}

func (k *knotPrimary) writeZone(t *testing.T, zone, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(k.dir, zone+".zone"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload makes knotd read the zone file again: the difference goes to
// its journal (the IXFR) and a NOTIFY to mx1.
func (k *knotPrimary) reload(t *testing.T, zone, content string) {
	t.Helper()
	k.writeZone(t, zone, content)
	if out, err := exec.Command("knotc", "-s", k.sock, "zone-reload", zone).CombinedOutput(); err != nil {
		t.Fatalf("knotc zone-reload: %v\n%s", err, out)
	}
}

func peerStatus(t *testing.T, td *testDaemon, name string) peers.Status {
	t.Helper()
	var st Status
	if err := call(t, td.sock, control.Request{Cmd: control.CmdStatus}, &st); err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, p := range st.Peers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("status has no peer %s: %+v", name, st.Peers)
	return peers.Status{}
}

func bannedBy(t *testing.T, td *testDaemon, prefix string) string {
	t.Helper()
	for _, b := range list(t, td.sock) {
		if b.Prefix.String() == prefix {
			return b.Detector
		}
	}
	return ""
}

// A real Knot primary serves a peer's zone with TSIG; the daemon follows
// it. A listing added to the zone file and reloaded (Knot sends a NOTIFY,
// mxguard asks for an IXFR) bans the client in the firewall of the
// server's namespace: its packets are dropped. Removed, the ban is
// lifted. A peer configured with a wrong secret transfers nothing.
func TestPeersKnotNetns(t *testing.T) {
	netnstest.Require(t, "iptables", "ip6tables")
	for _, prog := range []string{"knotd", "knotc"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install knot; .ci/run installs it)", prog)
		}
	}
	serverNS, clientNS := netnstest.Pair(t)
	netnstest.Listen(t, serverNS, "tcp", "192.0.2.1:25")

	notifyAddr := freeUDP(t)
	k := startKnot(t, notifyAddr)

	cfg := newTestConfig(t)
	cfg.Actions.IPTables.Enabled = true
	cfg.Actions.IPTables.IPTablesPath = netnstest.Wrapper(t, serverNS, "iptables")
	cfg.Actions.IPTables.IP6TablesPath = netnstest.Wrapper(t, serverNS, "ip6tables")
	cfg.Actions.IPTables.IPTablesRestorePath = netnstest.Wrapper(t, serverNS, "iptables-restore")
	cfg.Actions.IPTables.IP6TablesRestorePath = netnstest.Wrapper(t, serverNS, "ip6tables-restore")
	peer := func(name, zone, secret, notify string) peers.Config {
		return peers.Config{Name: name, Zone: zone, Primary: k.addr, NotifyListen: notify,
			TSIG:    tsig.Key{Name: knotKey, Algorithm: "hmac-sha256", Secret: secret},
			Refresh: duration.Duration(time.Hour)} // NOTIFY drives the updates here
	}
	cfg.Peers = []peers.Config{
		peer("mx2", knotGoodZone, knotSecret, notifyAddr),
		peer("mx3", knotOtherZone, knotWrong, ""),
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	td := startDaemonWith(t, cfg, Options{})

	waitFor(t, "the AXFR of the peer's zone", 5*time.Second, func() bool {
		return bannedBy(t, td, "198.51.100.9/32") == "peer:mx2"
	}, td.logs)
	if st := peerStatus(t, td, "mx2"); st.Serial != 1 || st.LastKind != "axfr" || st.Skipped[peers.SkipTest] != 1 {
		t.Fatalf("mx2 after the first transfer: %+v", st)
	}
	netnstest.ExpectDial(t, clientNS, "tcp", "192.0.2.1:25", "ok")

	// The peer bans the client: a NOTIFY, an IXFR, a DROP rule.
	k.reload(t, knotGoodZone, knotZoneFile(2, "9.100.51.198 A 127.0.0.2",
		"2.2.0.192 A 127.0.0.2", `2.2.0.192 TXT "dictionary: 5 unknown recipients in 10m; until 2099-01-01T00:00:00Z"`))
	const rule = "-A MXGUARD -s 192.0.2.2/32 -j DROP"
	waitFor(t, "the mirrored ban's rule", 5*time.Second, func() bool {
		return strings.Contains(iptablesS(serverNS, "iptables", "MXGUARD"), rule)
	}, td.logs)
	st := peerStatus(t, td, "mx2")
	if st.Serial != 2 || st.LastKind != "ixfr" || st.Notifies == 0 {
		t.Fatalf("mx2 after the reload: %+v; want serial 2 by IXFR after a NOTIFY", st)
	}
	var ex ban.Explanation
	if err := call(t, td.sock, control.Request{Cmd: control.CmdExplain, IP: "192.0.2.2"}, &ex); err != nil {
		t.Fatal(err)
	}
	if !ex.Banned || ex.Record != nil || ex.History != nil || len(ex.Peers) != 1 ||
		ex.Peers[0].Reason != "dictionary: 5 unknown recipients in 10m" {
		t.Fatalf("explain 192.0.2.2: %+v; want the peer's listing, no record, no history", ex)
	}
	netnstest.ExpectDial(t, clientNS, "tcp", "192.0.2.1:25", "timeout")

	// The peer lifts it.
	k.reload(t, knotGoodZone, knotZoneFile(3, "9.100.51.198 A 127.0.0.2"))
	waitFor(t, "the rule to go", 5*time.Second, func() bool {
		return !strings.Contains(iptablesS(serverNS, "iptables", "MXGUARD"), rule)
	}, td.logs)
	if d := bannedBy(t, td, "192.0.2.2/32"); d != "" {
		t.Fatalf("192.0.2.2 still banned by %s", d)
	}
	netnstest.ExpectDial(t, clientNS, "tcp", "192.0.2.1:25", "ok")

	// The wrong key transferred nothing.
	bad := peerStatus(t, td, "mx3")
	if bad.HaveZone || bad.Failures == 0 || !strings.Contains(bad.LastError, "TSIG") {
		t.Fatalf("mx3 (wrong secret): %+v; want a TSIG failure", bad)
	}
	if d := bannedBy(t, td, "192.0.2.3/32"); d != "" {
		t.Fatalf("192.0.2.3 banned by %s through a transfer with a wrong key", d)
	}

	// A restart while the peer's server is down: the zone kept in
	// state_dir puts the peer's bans back, into the firewall too.
	td.stop(t)
	k.stop()
	netnstest.Run(t, "ip", "netns", "exec", serverNS, "iptables", "-F", "MXGUARD") // what is there after the restart is the new daemon's
	td = startDaemonWith(t, cfg, Options{})
	waitFor(t, "the saved listing after the restart", 5*time.Second, func() bool {
		return bannedBy(t, td, "198.51.100.9/32") == "peer:mx2" &&
			strings.Contains(iptablesS(serverNS, "iptables", "MXGUARD"), "-A MXGUARD -s 198.51.100.9/32 -j DROP")
	}, td.logs)
	if st := peerStatus(t, td, "mx2"); st.Serial != 3 || st.LastKind != "saved" {
		t.Fatalf("mx2 after a restart without its server: %+v", st)
	}
}
