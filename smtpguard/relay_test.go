package smtpguard

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// upstreamEnd is where Postfix ends a message it reads: the first line
// (LF-terminated, one trailing CR dropped) that is a lone dot.
func upstreamEnd(b []byte) int {
	start := 0
	for {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return -1
		}
		line := strings.TrimSuffix(string(b[start:start+i]), "\r")
		if line == "." {
			return start + i + 1
		}
		start += i + 1
	}
}

func TestDataRelay(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		upstream string // what the upstream gets, end marker included
		rest     string // client bytes after the end marker
	}{
		{"plain", "Subject: x\r\n\r\nbody\r\n.\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n", ""},
		{"empty message", ".\r\n", ".\r\n", ""},
		{"stuffed dot stays stuffed", "..hidden\r\n...\r\n.\r\n", "..hidden\r\n...\r\n.\r\n", ""},
		{"pipelined commands after the end", "a\r\n.\r\nQUIT\r\n", "a\r\n.\r\n", "QUIT\r\n"},
		{"bare LF becomes CRLF", "a\nb\r\n.\r\n", "a\r\nb\r\n.\r\n", ""},
		{"smuggling: LF.CRLF is data", "a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n", "a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n", ""},
		{"smuggling: CRLF.LF is data", "a\r\n.\nRCPT TO:<x@y>\r\n.\r\n", "a\r\n..\r\nRCPT TO:<x@y>\r\n.\r\n", ""},
		{"smuggling: LF.LF is data", "a\n.\nDATA\r\n.\r\n", "a\r\n..\r\nDATA\r\n.\r\n", ""},
		{"dot CR CR LF is data", "a\r\n.\r\r\nb\r\n.\r\n", "a\r\n..\r\r\nb\r\n.\r\n", ""},
		{"dot CR then text", "a\r\n.\rX\r\n.\r\n", "a\r\n.\rX\r\n.\r\n", ""},
		{"bare CR passes", "a\rb\r\n.\r\n", "a\rb\r\n.\r\n", ""},
		{"CR CR LF ends a line", "a\r\r\n.\r\n", "a\r\r\n.\r\n", ""},
		{"no end yet", "a\r\n.", "a\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// byte by byte and all at once must agree
			for _, step := range []int{1, len(tc.in)} {
				r := newDataRelay()
				var got []byte
				in := []byte(tc.in)
				n := 0
				for n < len(in) && !r.done {
					r.out = r.out[:0]
					n += r.scan(in[n:min(n+step, len(in))])
					got = append(got, r.out...)
				}
				if r.done {
					got = append(got, ".\r\n"...)
				}
				if string(got) != tc.upstream {
					t.Errorf("step %d: upstream got %q, want %q", step, got, tc.upstream)
				}
				if rest := string(in[n:]); r.done && rest != tc.rest {
					t.Errorf("step %d: rest %q, want %q", step, rest, tc.rest)
				}
				if r.done {
					// Postfix must end the message where the guard did, never before
					if e := upstreamEnd(got); e != len(got) {
						t.Errorf("step %d: upstream ends the message at %d of %d: %q", step, e, len(got), got)
					}
				}
			}
		})
	}
}

// FuzzDataRelay: whatever the client sends, the upstream never sees an
// end of message before the guard's own end marker.
func FuzzDataRelay(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\n", "a\n.\r\nb\r\n.\r\n", ".\r\r\n.\r\n", "..\n.\n\r\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newDataRelay()
		n := r.scan(in)
		got := r.out
		if r.done {
			got = append(got, ".\r\n"...)
		}
		e := upstreamEnd(got)
		switch {
		case r.done && e != len(got):
			t.Fatalf("%q: upstream ends at %d of %d: %q", in[:n], e, len(got), got)
		case !r.done && e >= 0:
			t.Fatalf("%q: upstream ends at %d without the guard's end marker: %q", in, e, got)
		}
	})
}

// A client in the tarpit with no accepted recipient holds no upstream
// session (an smtpd process of a limited pool) while it waits: the guard
// ends it with QUIT before the delay and opens a fresh one at the next
// RCPT. A client with an accepted recipient keeps its transaction.
func TestTarpitReleasesUpstream(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Limits.SoftErrorLimit = 1
		c.Limits.HardErrorLimit = 10
		c.Limits.ErrorSleep = Duration(time.Millisecond)
	})
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd("EHLO client.example.org", 250)
	c.cmd("MAIL FROM:<a@example.org>", 250)
	for i := range 3 {
		c.cmd(fmt.Sprintf("RCPT TO:<nobody%d@example.com>", i), 550)
	}
	// errors 2 and 3 were past the soft limit: the upstream was let go
	// before each delay and dialled again for the next RCPT (4 unknown
	// recipients in all: one below the dictionary detector's ban)
	if n := h.up.connCount(); n != 2 {
		t.Errorf("upstream connections %d, want 2 (one, then one after the first tarpitted error)", n)
	}
	if got := h.up.waitQuits(2); got != 2 {
		t.Errorf("upstream QUITs %d, want 2 (one before each delay)", got)
	}
	c.cmd("RCPT TO:<alice@example.com>", 250)
	c.cmd("RCPT TO:<nobody9@example.com>", 550) // tarpitted, but alice is accepted: kept
	if got := h.up.waitQuits(3); got != 2 {
		t.Errorf("upstream QUITs %d, want still 2", got)
	}
	c.cmd("DATA", 354)
	c.send("Subject: t\r\n\r\nhello\r\n.\r\n")
	c.expect(250)
	msgs := h.up.messages()
	if len(msgs) != 1 || strings.Join(msgs[0].to, ",") != "alice@example.com" || msgs[0].from != "a@example.org" {
		t.Fatalf("upstream got %+v, want one message from a@example.org to alice", msgs)
	}
	if n := h.up.connCount(); n != 3 {
		t.Errorf("upstream connections %d, want 3 (the transaction with alice kept its own)", n)
	}
}

// waitQuits counts the QUIT commands the upstream got, waiting up to
// 200 ms for want of them (the guard does not wait for the 221).
func (f *fakeUpstream) waitQuits(want int) int {
	deadline := time.Now().Add(200 * time.Millisecond)
	for {
		f.mu.Lock()
		n := 0
		for _, l := range f.lines {
			if l == "QUIT" {
				n++
			}
		}
		f.mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A large message (long lines, dot-stuffed lines) arrives unchanged, and
// a message that tries to end early for an upstream that splits lines at
// a bare LF ("\n.\r\n" followed by commands) stays one message.
func TestRelayMessageThroughGuard(t *testing.T) {
	h := newHarness(t, nil)
	var big strings.Builder
	big.WriteString("Subject: big\r\n\r\n")
	for i := 0; big.Len() < 300<<10; i++ {
		fmt.Fprintf(&big, "%s line %d %s\r\n", strings.Repeat("x", i%3000), i, strings.Repeat("y", i%7))
		if i%50 == 0 {
			big.WriteString("..a stuffed line\r\n")
		}
	}
	smuggle := "Subject: s\r\n\r\nhello\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nforged\r\n"
	for _, tc := range []struct{ name, wire, want string }{
		{"big", big.String(), strings.ReplaceAll(big.String(), "\r\n..", "\r\n.")},
		{"smuggling", smuggle, "Subject: s\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nforged\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.up.messages())
			c := dial(t, h.addr)
			c.expect(220)
			c.cmd("EHLO client.example.org", 250)
			c.cmd("MAIL FROM:<a@example.org>", 250)
			c.cmd("RCPT TO:<alice@example.com>", 250)
			c.cmd("DATA", 354)
			c.send(tc.wire + ".\r\nQUIT\r\n")
			c.expect(250)
			c.expect(221)
			msgs := h.up.messages()[before:]
			if len(msgs) != 1 {
				t.Fatalf("upstream got %d messages, want 1", len(msgs))
			}
			if msgs[0].data != tc.want {
				t.Errorf("upstream got %d bytes, want %d; first 200: %q", len(msgs[0].data), len(tc.want), msgs[0].data[:min(200, len(msgs[0].data))])
			}
			if strings.Join(msgs[0].to, ",") != "alice@example.com" || msgs[0].from != "a@example.org" {
				t.Errorf("envelope %s → %v", msgs[0].from, msgs[0].to)
			}
		})
	}
}

// The upstream's replies as the guard reads them: one string per reply,
// lines joined by "\n"; malformed replies are errors, not codes.
func TestUpstreamReadReply(t *testing.T) {
	long := strings.Repeat("x", 2000)
	for _, tc := range []struct {
		name, in string
		code     int
		text     string
		fail     bool
	}{
		{"one line", "250 2.0.0 Ok\r\n", 250, "2.0.0 Ok", false},
		{"multi-line", "250-guard.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n", 250, "guard.test\nPIPELINING\n8BITMIME", false},
		{"bare code", "354\r\n", 354, "", false},
		{"bare LF", "550 5.1.1 no\n", 550, "5.1.1 no", false},
		{"longer than the buffer", "250 " + long + "\r\n", 250, long, false},
		{"too long", "250 " + strings.Repeat("x", maxReplyLine+10) + "\r\n", 0, "", true},
		{"too many lines", strings.Repeat("250-"+long+"\r\n", maxReplyTotal/len(long)+1) + "250 end\r\n", 0, "", true},
		{"codes differ", "250-a\r\n550 b\r\n", 0, "", true},
		{"no code", "hello\r\n", 0, "", true},
		{"bad separator", "250+x\r\n", 0, "", true},
		{"cut off", "250-a\r\n250 b", 0, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if !tc.fail {
				in += "220 next\r\n"
			}
			u := &upstream{r: bufio.NewReaderSize(strings.NewReader(in), 1024)}
			code, text, err := u.readReply()
			if tc.fail {
				if err == nil {
					t.Fatalf("got %d %q, want an error", code, text)
				}
				return
			}
			if err != nil || code != tc.code || text != tc.text {
				t.Fatalf("got %d %q %v, want %d %q", code, text, err, tc.code, tc.text)
			}
			if code, text, err := u.readReply(); code != 220 || text != "next" || err != nil {
				t.Errorf("next reply: %d %q %v", code, text, err)
			}
		})
	}
}

func TestParseEnhancedCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want smtp.EnhancedCode
		ok   bool
	}{
		{"5.7.1", smtp.EnhancedCode{5, 7, 1}, true},
		{"4.3.0", smtp.EnhancedCode{4, 3, 0}, true},
		{"2.0.0", smtp.EnhancedCode{2, 0, 0}, true},
		{"5.1.10", smtp.EnhancedCode{5, 1, 10}, true},
		{"5.7", smtp.EnhancedCode{}, false},
		{"5.7.1.2", smtp.EnhancedCode{}, false},
		{"5..1", smtp.EnhancedCode{}, false},
		{"5.x.1", smtp.EnhancedCode{}, false},
		{"5.7.1234", smtp.EnhancedCode{}, false},
		{"", smtp.EnhancedCode{}, false},
	} {
		if got, ok := parseEnhancedCode(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("%q: %v %v, want %v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
