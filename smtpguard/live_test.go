package smtpguard

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// notifyTo makes the block list tell g of each new ban, as the daemon
// subscribes the guard to ban.Manager.OnBan.
func (b *memBlocklist) notifyTo(g *Guard) {
	b.mu.Lock()
	b.onBan = func(p netip.Prefix, why string) { g.EndBanned(p, why) }
	b.mu.Unlock()
}

// upstreamLinesSince returns the command lines the fake upstream got
// after the first n.
func (f *fakeUpstream) linesSince(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lines[n:]...)
}

func (f *fakeUpstream) lineCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lines)
}

// expectBanned reads the 421 of a banned session and its close, without
// the client sending anything.
func expectBanned(t *testing.T, c *tclient, ip string) {
	t.Helper()
	text := c.expect(421)
	if want := "421 4.7.0 guard.test Error: client host [" + ip + "] banned"; text != want {
		t.Fatalf("reply %q, want %q", text, want)
	}
	if !c.closed() {
		t.Fatal("banned session not closed")
	}
}

// onlyGoodbyes fails if the upstream got anything but RSET or QUIT.
func onlyGoodbyes(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		if l != "QUIT" && l != "RSET" {
			t.Errorf("upstream got %q after the ban", l)
		}
	}
}

// A client banned by its own 5th unknown recipient gets the 550 and at
// once the 421, without sending anything more and without the error
// sleep it had earned; nothing more reaches the upstream.
func TestBanEndsSessionOwnEvidence(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limits.SoftErrorLimit = 4
		c.Limits.ErrorSleep = Duration(5 * time.Second) // the 5th error would sleep 5 s
	})
	h.bl.notifyTo(h.g)
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO harvester.example.org", 250)
	c.cmd("MAIL FROM:<h@example.net>", 250)
	for i := range 4 {
		c.cmd(fmt.Sprintf("RCPT TO:<nobody%d@example.com>", i), 550)
	}
	start := time.Now()
	c.cmd("RCPT TO:<nobody4@example.com>", 550)
	n := h.up.lineCount()
	expectBanned(t, c, "127.0.0.1")
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("421 after %s: the banned client was tarpitted", el)
	}
	if _, banned := h.bl.Banned(mustAddr("127.0.0.1")); !banned {
		t.Fatalf("not banned: %s", h.ev.summary())
	}
	time.Sleep(50 * time.Millisecond) // let the upstream's QUIT arrive
	onlyGoodbyes(t, h.up.linesSince(n))
	if st := h.g.Stats(); st.BannedSessions != 1 || st.Active != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A ban from elsewhere (another session, the log, by hand) ends the
// sessions inside its prefix while they wait for their clients - an open
// transaction is abandoned upstream, a message in DATA is not delivered -
// and leaves the others, and guard.allowlist clients, alone.
func TestBanEndsSessionExternal(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Allowlist = []string{"127.0.0.1"}
		c.Limits.MaxConnectionsPerClient = 0
	})
	h.bl.notifyTo(h.g)
	open := func(src string) *tclient {
		c := dialFrom(t, h.addr, src)
		c.expect(220)
		c.cmd("EHLO client.example.org", 250)
		return c
	}
	idle := open("127.0.0.2")
	inTx := open("127.0.0.3")
	inTx.cmd("MAIL FROM:<s@example.net>", 250)
	inTx.cmd("RCPT TO:<alice@example.com>", 250)
	inData := open("127.0.0.3")
	inData.cmd("MAIL FROM:<s@example.net>", 250)
	inData.cmd("RCPT TO:<bob@example.com>", 250)
	inData.cmd("DATA", 354)
	inData.send("Subject: half\r\n\r\nthe first half")
	outside := open("127.0.0.9")
	allowed := open("127.0.0.1")
	time.Sleep(50 * time.Millisecond) // the half message reaches the upstream
	n := h.up.lineCount()

	h.bl.banPrefix(netip.MustParsePrefix("127.0.0.0/30"), "manual: by hand")
	expectBanned(t, idle, "127.0.0.2")
	expectBanned(t, inTx, "127.0.0.3")
	expectBanned(t, inData, "127.0.0.3")
	outside.cmd("NOOP", 250)
	allowed.cmd("NOOP", 250)

	time.Sleep(50 * time.Millisecond)
	onlyGoodbyes(t, h.up.linesSince(n))
	if m := h.up.messages(); len(m) != 0 {
		t.Errorf("upstream got %d messages, want none", len(m))
	}
	if st := h.g.Stats(); st.BannedSessions != 3 || st.Active != 2 {
		t.Errorf("stats %+v", st)
	}
	// A later ban of the same address is no news.
	if n := h.g.EndBanned(netip.MustParsePrefix("127.0.0.2/32"), "again"); n != 0 {
		t.Errorf("EndBanned told %d sessions, want 0", n)
	}
}

// A client banned while it waits in the greet pause is refused at its end.
func TestBanDuringGreetPause(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.GreetPause = Duration(400 * time.Millisecond) })
	h.bl.notifyTo(h.g)
	c := dial(t, h.addr)
	time.Sleep(100 * time.Millisecond)
	h.bl.banPrefix(netip.MustParsePrefix("127.0.0.1/32"), "manual")
	if text := c.expect(554); !strings.Contains(text, "blocked by mxguard") {
		t.Fatalf("reply %q", text)
	}
	if st := h.g.Stats(); st.Blocked != 1 || st.Admitted != 0 {
		t.Errorf("stats %+v", st)
	}
}

// EndBanned finds sessions by address or by prefix, IPv4-mapped
// prefixes included.
func TestEndBannedPrefixes(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Limits.MaxConnectionsPerClient = 0 })
	var clients []*tclient
	for _, src := range []string{"127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"} {
		c := dialFrom(t, h.addr, src)
		c.expect(220)
		clients = append(clients, c)
	}
	for _, tc := range []struct {
		prefix string
		want   int
	}{
		{"127.0.0.5/32", 1},
		{"127.0.0.4/31", 0}, // .5 was told already; .4 has no session
		{"::ffff:127.0.0.6/128", 1},
		{"127.0.0.0/24", 2}, // .7 and .8
		{"10.0.0.0/8", 0},
		{"::1/128", 0},
	} {
		if n := h.g.EndBanned(netip.MustParsePrefix(tc.prefix), "test"); n != tc.want {
			t.Errorf("EndBanned(%s) = %d, want %d", tc.prefix, n, tc.want)
		}
	}
	for i, c := range clients {
		expectBanned(t, c, fmt.Sprintf("127.0.0.%d", 5+i))
	}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func bufferLogger(b *lockedBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// BenchmarkBanEndsSession measures the time from a ban's notification
// (EndBanned, as the Manager calls it) to the 421 at a client that waits
// in its session after EHLO (setup not timed).
//
//	go test -run '^$' -bench BanEndsSession ./smtpguard
func BenchmarkBanEndsSession(b *testing.B) {
	h := newHarness(b, nil)
	p := netip.MustParsePrefix("127.0.0.1/32")
	for b.Loop() {
		b.StopTimer()
		c := dial(b, h.addr)
		c.expect(220)
		c.cmd("EHLO client.example.org", 250)
		b.StartTimer()
		h.g.EndBanned(p, "bench")
		c.expect(421)
		b.StopTimer()
		c.c.Close()
		b.StartTimer()
	}
}
