package smtpguard

import (
	"errors"
	"io"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// This file holds what the guard does to sessions already running: it
// ends those of a client banned meanwhile, and it shortens timeouts while
// too many connections are open (stress).

// errBanned ends the read of a session whose client was banned.
var errBanned = errors.New("smtpguard: client banned")

// banWriteGrace bounds the last writes to a banned client (the reply in
// flight and the 421): a client that does not read must not hold the
// session for write_timeout.
const banWriteGrace = time.Second

// wakePast is a read deadline in the past: a Read blocked on the client
// returns at once, and fill looks at the session's state again.
var wakePast = time.Unix(1, 0)

// EndBanned ends the live SMTP sessions of every client inside prefix
// (a ban just put in force; see ban.Manager.OnBan): each is answered
// "421 4.7.0 ... banned" at once if it waits for the client, or at its
// next command, and closed; nothing more of it reaches the upstream.
// Clients on guard.allowlist are left alone, as at connect. It returns
// the number of sessions told.
//
// It only sets flags and deadlines, so it may be called with the ban
// manager's lock held; it never emits events (that would re-enter the
// manager).
func (g *Guard) EndBanned(prefix netip.Prefix, reason string) int {
	if !prefix.IsValid() {
		return 0
	}
	if a := prefix.Addr(); a.Is4In6() && prefix.Bits() >= 96 {
		prefix = netip.PrefixFrom(a.Unmap(), prefix.Bits()-96) // sessions are indexed unmapped
	}
	prefix = prefix.Masked()
	n := 0
	end := func(set map[*guardConn]struct{}) {
		for c := range set {
			if c.endBan(reason) {
				n++
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if prefix.IsSingleIP() {
		end(g.byAddr[prefix.Addr()])
		return n
	}
	// A network ban walks the addresses with live sessions: at most
	// max_connections of them, and such bans are rare.
	for a, set := range g.byAddr {
		if prefix.Contains(a) {
			end(set)
		}
	}
	return n
}

// track and untrack keep the index of live sessions by client address;
// g.mu is held.
func (g *Guard) track(c *guardConn) {
	g.live[c] = struct{}{}
	set := g.byAddr[c.cs.ip]
	if set == nil {
		set = map[*guardConn]struct{}{}
		g.byAddr[c.cs.ip] = set
	}
	set[c] = struct{}{}
}

func (g *Guard) untrack(c *guardConn) {
	delete(g.live, c)
	if set := g.byAddr[c.cs.ip]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(g.byAddr, c.cs.ip)
		}
	}
}

// endBan marks the session banned and wakes it; false if it was already
// or its client is allowlisted. Any goroutine.
func (c *guardConn) endBan(reason string) bool {
	if c.cs.allowlisted || !c.cs.banReason.CompareAndSwap(nil, &reason) {
		return false
	}
	close(c.cs.banKill)
	c.raw.SetWriteDeadline(time.Now().Add(banWriteGrace))
	c.raw.SetReadDeadline(wakePast)
	return true
}

// banned reports whether the session's client is banned: told by
// EndBanned, or found in the block list now (a ban made between the
// connect check and the session's entry in the index, or by a Blocklist
// that does not notify). Session goroutine.
func (c *guardConn) banned() (string, bool) {
	if r := c.cs.banReason.Load(); r != nil {
		return *r, true
	}
	g := c.g
	if c.cs.allowlisted || g.blocklist == nil {
		return "", false
	}
	why, ok := g.blocklist.Banned(c.cs.ip)
	if !ok {
		return "", false
	}
	reason := why // only a ban's reason goes to the heap, not every command's lookup
	if c.cs.banReason.CompareAndSwap(nil, &reason) {
		close(c.cs.banKill)
	}
	return why, true
}

// bannedEnd does the bookkeeping of ending a banned client's session,
// once, and returns the 421 reply. Session goroutine.
func (g *Guard) bannedEnd(cs *connState, reason string) string {
	reply := "421 4.7.0 " + g.cfg.Hostname + " Error: client host [" + cs.ip.String() + "] banned"
	if cs.banEnded {
		return reply
	}
	cs.banEnded = true
	g.ctr.bannedSessions.Add(1)
	cs.verdict = "banned: " + sanitize(reason, 200)
	g.log.Info("guard: session of a banned client ended", "ip", cs.ip.String(), "cid", cs.id,
		"after", cs.stage, "reason", sanitize(reason, 200))
	// Not evidence: the ban is made already.
	g.reject(cs, cs.stage, reply, event.ReasonClientAccess, false)
	return reply
}

// endBanned answers a banned client 421 and ends its session. Session
// goroutine.
func (c *guardConn) endBanned(reason string) error {
	reply := c.g.bannedEnd(c.cs, reason)
	c.onReply(421)
	c.c.SetWriteDeadline(time.Now().Add(min(banWriteGrace, c.g.cfg.Limits.WriteTimeout.D())))
	c.writeReply(reply)
	return io.EOF
}

// stressed reports whether the guard is under stress now.
func (g *Guard) stressed() bool { return g.stress.Load() }

// stressLevels returns the open-connection counts at which stress begins
// (more than enter) and ends (at most leave); enter < 0: never.
func stressLevels(l Limits) (enter, leave int) {
	if l.StressThreshold <= 0 || l.MaxConnections <= 0 {
		return -1, -1
	}
	enter = int(l.StressThreshold * float64(l.MaxConnections))
	return enter, enter * 9 / 10
}

// checkStress updates the stress state for total open connections; g.mu
// is held. On a change it logs once, and wakes the sessions blocked on
// their clients so that their deadlines follow the new timeouts.
func (g *Guard) checkStress(total int) {
	var now bool
	switch was := g.stress.Load(); {
	case g.stressEnter < 0:
		return
	case !was && total > g.stressEnter:
		now = true
	case was && total <= g.stressLeave:
		now = false
	default:
		return
	}
	if !now {
		end := time.Now()
		g.stressEnded.Store(&end)
	}
	g.stress.Store(now)
	g.stressGen.Add(1)
	if now {
		g.ctr.stressEpisodes.Add(1)
		g.log.Warn("guard: under stress: shorter timeouts, greet pause and error sleep",
			"open", total, "max_connections", g.cfg.Limits.MaxConnections,
			"command_timeout", g.commandTimeout(), "idle_timeout", g.idleTimeout(),
			"greet_pause", g.greetPause(), "error_sleep", g.errorSleep())
	} else {
		g.log.Warn("guard: stress over: normal timeouts", "open", total)
	}
	// At most max_connections sessions, once per change of state.
	for c := range g.live {
		c.raw.SetReadDeadline(wakePast)
	}
}

// The values stress changes. Postfix drops smtpd_timeout to 10 s under
// stress; the pause and the tarpit hold connection slots, which are what
// is short then, so they shrink too (a pregreet bot talks at once, and
// the pause still catches it).
func (g *Guard) commandTimeout() time.Duration { return g.commandTimeoutIn(g.stressed()) }
func (g *Guard) idleTimeout() time.Duration    { return g.idleTimeoutIn(g.stressed()) }
func (g *Guard) lineTimeout() time.Duration    { return g.lineTimeoutIn(g.stressed()) }

// The same, in or out of stress.
func (g *Guard) commandTimeoutIn(stressed bool) time.Duration {
	return g.stressAware(g.cfg.Limits.CommandTimeout.D(), stressed)
}
func (g *Guard) idleTimeoutIn(stressed bool) time.Duration {
	return g.stressAware(g.cfg.Limits.IdleTimeout.D(), stressed)
}
func (g *Guard) lineTimeoutIn(stressed bool) time.Duration {
	return g.stressAware(g.cfg.Limits.LineTimeout.D(), stressed)
}

func (g *Guard) stressAware(d time.Duration, stressed bool) time.Duration {
	if stressed {
		return min(d, g.cfg.Limits.StressTimeout.D())
	}
	return d
}

// expiredUnderStress reports whether a wait with deadline (in or out of
// stress) passed its stress deadline before the last stress episode
// ended: it was due to be cut then, however late its goroutine runs.
// Without this, which of the sessions that timed out together are cut
// would depend on scheduling: the first few cuts end the stress, and the
// goroutines that run after them would see the normal timeouts again.
func (g *Guard) expiredUnderStress(deadline func(stressed bool) time.Time) bool {
	end := g.stressEnded.Load()
	return end != nil && g.stressEnter >= 0 && !deadline(true).After(*end)
}

func (g *Guard) greetPause() time.Duration {
	if g.stressed() {
		return g.cfg.GreetPause.D() / 4
	}
	return g.cfg.GreetPause.D()
}

func (g *Guard) errorSleep() time.Duration {
	if g.stressed() {
		return g.cfg.Limits.ErrorSleep.D() / 4
	}
	return g.cfg.Limits.ErrorSleep.D()
}
