package smtpguard

import (
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// The guard sends MAIL and the first RCPT upstream in one write when the
// upstream offered PIPELINING to an EHLO client (one round trip less),
// never for a HELO client, and never XCLIENT or EHLO with anything
// behind them. A refused MAIL is relayed and the replies stay in step.
func TestUpstreamMailRcptPipelining(t *testing.T) {
	for _, tc := range []struct {
		name, greet string
		grouped     bool
	}{
		{"EHLO", "EHLO client.example.org", true},
		{"HELO", "HELO client.example.org", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.up.refuse = map[string]bool{"spam@example.net": true}
			c := dial(t, h.addr)
			c.expect(220)
			c.cmd(tc.greet, 250)
			c.cmd("MAIL FROM:<spam@example.net>", 250) // the guard's own checks pass
			text := c.cmd("RCPT TO:<alice@example.com>", 553)
			if !strings.Contains(text, "Sender address rejected") {
				t.Fatalf("MAIL refusal not relayed: %q", text)
			}
			c.cmd("RCPT TO:<bob@example.com>", 553) // same refusal, no new MAIL
			c.cmd("RSET", 250)
			c.cmd("MAIL FROM:<a@example.net>", 250)
			c.cmd("RCPT TO:<alice@example.com>", 250)
			c.cmd("RCPT TO:<nobody@example.com>", 550)
			c.cmd("RCPT TO:<bob@example.com>", 250)
			c.cmd("DATA", 354)
			c.send(testWire + ".\r\n")
			c.expect(250)
			c.cmd("QUIT", 221)
			m := h.up.messages()
			if len(m) != 1 || m[0].from != "a@example.net" || !slices.Equal(m[0].to, []string{"alice@example.com", "bob@example.com"}) {
				t.Fatalf("messages %+v", m)
			}
			h.up.mu.Lock()
			grouped, lines := slices.Clone(h.up.grouped), slices.Clone(h.up.lines)
			h.up.mu.Unlock()
			want := []string{"MAIL FROM:<spam@example.net>", "MAIL FROM:<a@example.net>"}
			if !tc.grouped {
				want = nil
			}
			if !slices.Equal(grouped, want) {
				t.Errorf("pipelined upstream lines %q, want %q (all: %q)", grouped, want, lines)
			}
			if n := strings.Count(strings.Join(lines, "\n"), "MAIL FROM:<spam@example.net>"); n != 1 {
				t.Errorf("refused MAIL sent %d times: %q", n, lines)
			}
		})
	}
}

// writeCounter counts the writes on the connections it accepts.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, n: &l.writes}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// The replies to a pipelined command group go to the client in one write
// (as Postfix sends them), in order; a client that does not pipeline gets
// each reply at once; a closing reply is never held back.
func TestPipelinedRepliesOneWrite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		group  []string
		codes  []int
		writes int64
	}{
		{"MAIL RCPT DATA", []string{"MAIL FROM:<a@example.net>", "RCPT TO:<alice@example.com>", "DATA"}, []int{250, 250, 354}, 1},
		{"with a refused RCPT", []string{"MAIL FROM:<a@example.net>", "RCPT TO:<nobody@example.com>", "RCPT TO:<bob@example.com>", "DATA"}, []int{250, 550, 250, 354}, 2}, // flushed before the error reply
		{"RSET NOOP QUIT", []string{"RSET", "NOOP", "QUIT"}, []int{250, 250, 221}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeUpstream(t, false)
			g, err := New(testConfig(up.addr()), Deps{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			wc := &writeCounter{Listener: l}
			h := serveGuard(t, g, wc, up, nil, nil)
			c := dial(t, h.addr)
			c.expect(220)
			c.cmd("EHLO client.example.org", 250)
			before := wc.writes.Load()
			c.send(strings.Join(tc.group, "\r\n") + "\r\n")
			for i, code := range tc.codes {
				if got, text := c.reply(); got != code {
					t.Fatalf("reply %d: %q, want %d", i, text, code)
				}
			}
			if n := wc.writes.Load() - before; n != tc.writes {
				t.Errorf("%d writes for the group's replies, want %d", n, tc.writes)
			}
			if tc.codes[len(tc.codes)-1] == 354 {
				before = wc.writes.Load()
				c.send(testWire + ".\r\n")
				c.expect(250)
				c.cmd("NOOP", 250) // one command at a time: one write each
				if n := wc.writes.Load() - before; n != 2 {
					t.Errorf("%d writes for two unpipelined replies, want 2", n)
				}
			}
		})
	}
}
