package policy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/event"
)

// memBlocklist bans prefixes; LookupEnforced returns the longest holding
// a that is not a dry run's, as the Manager's does.
type memBlocklist struct {
	mu   sync.Mutex
	bans []ban.Ban
}

func (m *memBlocklist) ban(p string, dry bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bans = append(m.bans, ban.Ban{Prefix: netip.MustParsePrefix(p), Reason: "test ban", DryRun: dry})
}

func (m *memBlocklist) LookupEnforced(a netip.Addr, _ time.Time) (ban.Ban, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var best ban.Ban
	ok := false
	for _, b := range m.bans {
		if b.Prefix.Contains(a) && !b.DryRun && (!ok || b.Prefix.Bits() > best.Prefix.Bits()) {
			best, ok = b, true
		}
	}
	return best, ok
}

// events collects what the server emits.
type events struct {
	mu  sync.Mutex
	evs []event.Event
}

func (e *events) sink(ev event.Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
}

func (e *events) all() []event.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]event.Event(nil), e.evs...)
}

func testConfig(t testing.TB) Config {
	c := DefaultConfig()
	c.Listen = "unix:" + filepath.Join(t.TempDir(), "policy.sock")
	c.Owner, c.Group, c.Mode = "", "", "" // the test's user may ask
	c.Hostname = "mx.ours.example"
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start runs a server on a temporary unix socket; it is shut down at the
// end of the test.
func start(t testing.TB, cfg Config, deps Deps) (*Server, string) {
	t.Helper()
	if deps.Logger == nil {
		deps.Logger = testLogger(t)
	}
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(context.Background(), l); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	_, addr, _ := cfg.ListenAddr()
	return s, addr
}

// client is one policy connection, like one smtpd process.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, path string) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// req is a policy request; attrs overrides or adds to a typical RCPT.
func req(attrs ...string) string {
	base := [][2]string{
		{"request", "smtpd_access_policy"}, {"protocol_state", "RCPT"}, {"protocol_name", "ESMTP"},
		{"client_address", "192.0.2.10"}, {"client_name", "mta.remote.example"},
		{"reverse_client_name", "mta.remote.example"}, {"helo_name", "mta.remote.example"},
		{"sender", "alice@remote.example"}, {"recipient", "bob@example.com"}, {"recipient_count", "0"},
		{"queue_id", ""}, {"instance", "1a2b.3c4d.1"}, {"size", "0"}, {"sasl_username", ""},
		{"server_address", "198.51.100.1"}, {"server_port", "25"},
	}
	for i := 0; i+1 < len(attrs); i += 2 {
		found := false
		for j := range base {
			if base[j][0] == attrs[i] {
				base[j][1], found = attrs[i+1], true
			}
		}
		if !found {
			base = append(base, [2]string{attrs[i], attrs[i+1]})
		}
	}
	var b strings.Builder
	for _, kv := range base {
		if kv[1] == "\x7f" { // drop the attribute
			continue
		}
		b.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// ask sends raw and returns the action ("" and the error when the
// connection closed without an answer).
func (c *client) ask(raw string) (string, error) {
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.c, raw); err != nil {
		return "", err
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	empty, err := c.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if empty != "\n" || !strings.HasPrefix(line, "action=") {
		c.t.Fatalf("bad reply %q %q", line, empty)
	}
	return strings.TrimSuffix(strings.TrimPrefix(line, "action="), "\n"), nil
}

func (c *client) mustAsk(raw string) string {
	c.t.Helper()
	a, err := c.ask(raw)
	if err != nil {
		c.t.Fatalf("no answer: %v", err)
	}
	return a
}

// closedWithoutReply reports whether the server closed c without
// writing anything (EOF, or a reset when our unread request was still
// in its buffer).
func (c *client) closedWithoutReply(within time.Duration) bool {
	c.c.SetReadDeadline(time.Now().Add(within))
	_, err := c.br.ReadByte()
	return isClosed(err)
}

func isClosed(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

// flushed returns once the server has sent the events of every request
// answered on c so far: the server sends a request's events after its
// reply and before it reads the next request, so one more round trip (a
// request without events: an unparsable client_address is answered DUNNO
// and counted in BadClient only) is the barrier.
func (c *client) flushed() {
	c.t.Helper()
	if a := c.mustAsk(req("client_address", "flush")); a != "DUNNO" {
		c.t.Fatalf("flush request: %q", a)
	}
}
