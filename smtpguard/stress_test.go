package smtpguard

import (
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// A command line must be finished within line_timeout of its first byte,
// however it trickles in; waiting between commands is command_timeout's.
func TestLineDeadline(t *testing.T) {
	const line = 1500 * time.Millisecond
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, h *harness, c *tclient)
	}{
		{"a byte a second is cut at the line deadline", func(t *testing.T, h *harness, c *tclient) {
			stop := make(chan struct{})
			defer close(stop)
			start := time.Now()
			go func() {
				for _, b := range []byte("EHLO slow.example.org\r\n") {
					if _, err := c.c.Write([]byte{b}); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-time.After(time.Second):
					}
				}
			}()
			text := c.expect(421)
			el := time.Since(start)
			if !strings.HasPrefix(text, "421 4.4.2 guard.test Error: timeout exceeded") {
				t.Fatalf("reply %q", text)
			}
			if el < line || el > line+time.Second {
				t.Errorf("cut after %s, want about %s", el, line)
			}
			if !c.closed() {
				t.Error("not closed")
			}
			if st := h.g.Stats(); st.LineTimeouts != 1 || st.Timeouts != 1 {
				t.Errorf("stats %+v", st)
			}
			if ev := h.ev.find(t, event.KindTimeout, event.ReasonNone); ev.Stage != "CONNECT" || !ev.Abuse {
				t.Errorf("event %+v", ev)
			}
		}},
		{"idle longer than the line deadline is not cut", func(t *testing.T, h *harness, c *tclient) {
			c.cmd("EHLO patient.example.org", 250)
			time.Sleep(line + 500*time.Millisecond)
			c.cmd("NOOP", 250)
			if st := h.g.Stats(); st.Timeouts != 0 {
				t.Errorf("stats %+v", st)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) {
				c.Limits.LineTimeout = Duration(line)
				c.Limits.CommandTimeout = Duration(time.Minute)
			})
			c := dial(t, h.addr)
			c.expect(220)
			tc.run(t, h, c)
		})
	}
}

// Stress begins when open connections exceed the threshold: the idle
// sessions are cut at stress_timeout instead of command_timeout until the
// open connections fall to 90% of the threshold, where stress ends (each
// logged once); the remaining sessions and new ones have the normal
// timeout again. Every session whose stress deadline passed before the
// end is cut, whatever the order its goroutine runs in: the first three
// cuts end the stress here, the other eight must follow.
func TestStressTimeouts(t *testing.T) {
	const stressTimeout = time.Second
	logs := &lockedBuffer{}
	up := newFakeUpstream(t, false)
	cfg := testConfig(up.addr())
	cfg.Limits.MaxConnections = 40
	cfg.Limits.MaxConnectionsPerClient = 0
	cfg.Limits.StressThreshold = 0.5 // above 20 open; over at 18
	cfg.Limits.StressTimeout = Duration(stressTimeout)
	cfg.Limits.CommandTimeout = Duration(30 * time.Second)
	h := startGuard(t, cfg, Deps{Logger: bufferLogger(logs)}, up, nil, nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stats %+v\nlogs:\n%s", h.g.Stats(), logs.String())
		}
	})

	dialIdle := func(n int) []*tclient {
		var cs []*tclient
		for range n {
			c := dial(t, h.addr)
			c.expect(220)
			cs = append(cs, c)
		}
		return cs
	}
	probe := dial(t, h.addr)
	probe.expect(220)
	probe.cmd("EHLO probe.example.org", 250)
	idleSince := time.Now()
	// Ten sessions idle for longer than stress_timeout, then ten fresh
	// ones: the 21st open connection begins stress.
	old := dialIdle(10)
	time.Sleep(stressTimeout + 100*time.Millisecond)
	fresh := dialIdle(10)
	if st := h.g.Stats(); st.StressEpisodes != 1 {
		t.Fatalf("no stress with 21 of 40 connections open: %+v", st)
	}
	if text := probe.expect(421); !strings.Contains(text, "timeout exceeded") {
		t.Fatalf("probe: %q", text)
	}
	if el := time.Since(idleSince); el > 2*stressTimeout+3*time.Second {
		t.Errorf("idle probe cut after %s under stress, want about %s", el, 2*stressTimeout)
	}
	for i, c := range old {
		if text := c.expect(421); !strings.Contains(text, "timeout exceeded") {
			t.Fatalf("old session %d: %q", i, text)
		}
	}
	// Stress ended at 18 open; all 11 old sessions were cut, the fresh
	// ones keep command_timeout again.
	deadline := time.Now().Add(5 * time.Second)
	for (h.g.Stats().Stress || h.g.Stats().Timeouts < 11) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := h.g.Stats(); st.Stress || st.StressEpisodes != 1 || st.Timeouts != 11 {
		t.Errorf("after the drop: %+v", st)
	}
	time.Sleep(stressTimeout + 500*time.Millisecond)
	for _, c := range fresh {
		c.cmd("NOOP", 250) // cut after stress ended: 421 or closed
	}
	if st := h.g.Stats(); st.Timeouts != 11 {
		t.Errorf("sessions cut after stress ended: %d timeouts, want 11", st.Timeouts)
	}
	for _, c := range fresh {
		c.c.Close()
	}

	late := dial(t, h.addr)
	late.expect(220)
	late.cmd("EHLO late.example.org", 250)
	time.Sleep(stressTimeout + 500*time.Millisecond)
	late.cmd("NOOP", 250)

	out := logs.String()
	for _, msg := range []string{"guard: under stress", "guard: stress over"} {
		if n := strings.Count(out, msg); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", msg, n, out)
		}
	}
}

// The values stress changes, and those it leaves.
func TestStressValues(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Hostname = "guard.test"
	g, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(t.Context())
	type values struct{ command, idle, line, pause, sleep time.Duration }
	get := func() values {
		return values{g.commandTimeout(), g.idleTimeout(), g.lineTimeout(), g.greetPause(), g.errorSleep()}
	}
	normal := values{5 * time.Minute, 5 * time.Minute, 10 * time.Second, time.Second, time.Second}
	stressed := values{10 * time.Second, 10 * time.Second, 10 * time.Second, 250 * time.Millisecond, 250 * time.Millisecond}
	if got := get(); got != normal {
		t.Errorf("normal: %+v, want %+v", got, normal)
	}
	g.stress.Store(true)
	if got := get(); got != stressed {
		t.Errorf("under stress: %+v, want %+v", got, stressed)
	}

	for _, tc := range []struct {
		threshold    float64
		max          int
		enter, leave int
	}{
		{0.8, 2000, 1600, 1440},
		{0.5, 40, 20, 18},
		{1, 10, 10, 9},
		{0, 2000, -1, -1},
		{0.8, 0, -1, -1},
	} {
		l := Limits{StressThreshold: tc.threshold, MaxConnections: tc.max}
		if e, lv := stressLevels(l); e != tc.enter || lv != tc.leave {
			t.Errorf("stressLevels(%v of %d) = %d, %d; want %d, %d", tc.threshold, tc.max, e, lv, tc.enter, tc.leave)
		}
	}
}
