package smtpguard

import (
	"slices"
	"strings"
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
