package smtpguard

import (
	"bufio"
	"bytes"
	"net"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// fuzzSep splits a fuzz input into chunks: the client writes a chunk,
// waits briefly for a reply, then writes the next (so DATA mode and
// replies between commands are reachable, not only pipelining).
var fuzzSep = []byte("\x00\x00")

// FuzzGuardConn feeds arbitrary client bytes through a real Guard (the
// filter in conn.go, go-smtp, the session and a fake upstream) and checks
// that nothing panics, the session ends within a bound, the goroutines
// and connection count return to where they were, and events carry no
// line breaks from the client. hold keeps the client's side open after
// the input, so the guard must end the session by its own timeouts.
//
//	go test -run '^$' -fuzz FuzzGuardConn -fuzztime 60s ./smtpguard
func FuzzGuardConn(f *testing.F) {
	up := newFakeUpstream(f, false)
	cfg := testConfig(up.addr())
	cfg.Limits.CommandTimeout = Duration(300 * time.Millisecond)
	cfg.Limits.LineTimeout = Duration(300 * time.Millisecond)
	cfg.Limits.IdleTimeout = Duration(300 * time.Millisecond)
	cfg.Limits.DataTimeout = Duration(600 * time.Millisecond)
	cfg.Limits.WriteTimeout = Duration(2 * time.Second)
	cfg.Limits.UpstreamTimeout = Duration(2 * time.Second)
	cfg.Limits.UpstreamDataTimeout = Duration(2 * time.Second)
	cfg.Limits.MaxMessageBytes = 64 << 10
	cfg.Limits.MaxRecipients = 20

	var mu sync.Mutex
	var bad []string // events that broke an invariant
	sink := func(ev event.Event) {
		var why string
		switch {
		case ev.Service != Service:
			why = "service"
		case ev.Client != mustAddr("127.0.0.1"):
			why = "client"
		case strings.ContainsAny(ev.Raw, "\r\n"), strings.ContainsAny(ev.Detail, "\r\n"),
			strings.ContainsAny(ev.Helo, "\r\n"), strings.ContainsAny(ev.From, "\r\n"), strings.ContainsAny(ev.To, "\r\n"):
			why = "line break from the client"
		}
		if why != "" {
			mu.Lock()
			bad = append(bad, why+": "+ev.Raw)
			mu.Unlock()
		}
	}
	h := startGuard(f, cfg, Deps{Sink: sink, Logger: testLogger(f)}, up, nil, nil)
	// One session first, so that the guard's long-lived goroutines are
	// all running before any iteration counts goroutines.
	warm := dial(f, h.addr)
	warm.expect(220)
	warm.cmd("QUIT", 221)
	warm.c.Close()
	for h.g.Stats().Active != 0 {
		time.Sleep(time.Millisecond)
	}

	j := func(parts ...string) []byte { return []byte(strings.Join(parts, string(fuzzSep))) }
	f.Add(j("EHLO c.example.org\r\n", "MAIL FROM:<a@b.example> SIZE=100\r\nRCPT TO:<alice@example.com>\r\n",
		"DATA\r\n", "Subject: x\r\n\r\nhi\r\n..dot\r\n.\r\n", "QUIT\r\n"), false)
	f.Add([]byte("EHLO early.example\r\nMAIL FROM:<a@b.example>\r\n"), false)
	f.Add(j("HELO c.example.org\r\n", "MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"), false)
	f.Add([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xff\xfe\r\n\n\r\x00"), false)
	f.Add([]byte("EHLO "+strings.Repeat("a", 5000)+"\r\n"), false)
	f.Add(j("EHLO c.example.org\r\n", "MAIL FROM:<a@b.example>\r\n", "RCPT TO:<alice@example.com>\r\n",
		"DATA\r\n", "Subject: x\r\n\r\nno end in sight"), true)
	f.Add([]byte(""), true)
	f.Add([]byte("GET / HTTP/1.1\r\nHost: mx\r\n\r\n"), false)
	f.Add(j("EHLO a.example\n", "MAIL FROM:<a@b.example>\n", "RCPT TO:<bob@example.com>\n", "DATA\n",
		".\n..\r\nx\r.\r\n.\r\n", "RSET\r\nNOOP\r\n"), false)
	f.Add(j("EHLO a.example\r\n", "XCLIENT ADDR=192.0.2.1\r\n", "STARTTLS\r\n", "VRFY root\r\n",
		"AUTH PLAIN AGFhAGI=\r\n", "BDAT 10 LAST\r\n"), false)
	f.Add(j(strings.Split(strings.Repeat("FOO\r\n,", 14), ",")...), false)
	f.Add(j("ehlo a.example\r\n", "mail from:<>\r\n", "rcpt to:<alice@example.com>\r\n",
		"rcpt to:<bob@example.com>\r\n", "data\r\n"), false)
	f.Add(j("HELO a.example\r\n", "E\rT\r\nNOOP\r\n"), false) // a pipelined unknown verb must not name the stage
	f.Add(j("EHLO a\rb.example\r\n", "HELO [IPv6:::1]\r\n", "MAIL FROM:<a\x01@b.example>\r\n",
		"MAIL FROM:<a@b.example>\r\n", "RCPT TO:<x\r@example.com>\r\n", "RCPT TO:<nobody@example.com>\r\n"), false)

	f.Fuzz(func(t *testing.T, input []byte, hold bool) {
		if len(input) > 64<<10 {
			t.Skip("input too large")
		}
		base := runtime.NumGoroutine()
		c, err := net.DialTimeout("tcp", h.addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		progress := make(chan struct{}, 1)
		done := make(chan struct{})
		var got bytes.Buffer // the guard's replies (read by the test after done)
		go func() {
			defer close(done)
			r := bufio.NewReader(c)
			for {
				l, err := r.ReadString('\n')
				got.WriteString(l)
				if err != nil {
					return
				}
				if len(l) < 4 || l[3] != '-' { // a final reply line
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			}
		}()
		// the banner first (talking before it is only pipelining here:
		// greet_pause is 0 to keep iterations fast)
		select {
		case <-progress:
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("no banner")
		}
		chunks := bytes.Split(input, fuzzSep)
		if len(chunks) > 50 {
			chunks = append(chunks[:49], bytes.Join(chunks[49:], nil))
		}
	write:
		for _, ch := range chunks {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(ch); err != nil {
				break // the guard hung up: fine
			}
			select {
			case <-progress:
			case <-done:
				break write
			case <-time.After(20 * time.Millisecond):
			}
		}
		if !hold {
			c.(*net.TCPConn).CloseWrite()
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("session still open 10s after the input (hold=%v)", hold)
		}
		if testing.Verbose() {
			t.Logf("replies:\n%s", got.String())
		}
		c.Close()

		deadline := time.Now().Add(5 * time.Second)
		for h.g.Stats().Active != 0 || runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				var b strings.Builder
				pprof.Lookup("goroutine").WriteTo(&b, 1)
				t.Fatalf("leak: active=%d goroutines %d > %d\n%s", h.g.Stats().Active, runtime.NumGoroutine(), base, b.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("bad events: %q", bad)
		}
	})
}
