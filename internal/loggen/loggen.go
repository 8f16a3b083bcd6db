// Package loggen writes deterministic, realistic Postfix mail logs for tests
// and benchmarks.
//
// The same Config (and so the same seed) always gives byte-identical output.
// Traffic is simulated as interleaved SMTP sessions: postscreen, smtpd,
// submission, cleanup/qmgr/delivery, bounces, plus some dovecot, cron and
// kernel lines. Between 10% and 25% of the lines (about 15%) are evidence
// against a client, much of it from a pool of repeat offenders. Evidence
// lines are: NOQUEUE rejects (except postscreen's benign "450 4.3.2" and
// greylisting), milter-reject, improper command pipelining, postscreen
// COMMAND PIPELINING/PREGREET/DNSBL rank/HANGUP/BARE NEWLINE/COMMAND COUNT
// LIMIT/DENYLISTED/BLACKLISTED, "too many errors", "lost connection after
// AUTH", SASL authentication failures and non-SMTP commands. Hostname
// mismatch warnings, other lost connections and timeouts are not counted. About 10% of the clients use IPv6 (2001:db8::/32); IPv4
// clients come from the documentation ranges or random public-looking
// addresses.
package loggen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Format is the syslog prefix style.
type Format uint8

const (
	// FormatBSD is Debian's default rsyslog file format:
	// "Nov  5 10:49:00 mx1 postfix/smtpd[8965]: ...", day padded with a space.
	FormatBSD Format = iota
	// FormatRFC3339 is rsyslog's RSYSLOG_FileFormat (high precision):
	// "2025-11-05T10:49:00.123456+01:00 mx1 postfix/smtpd[8965]: ...".
	FormatRFC3339
	// FormatMaillog is what Postfix (3.4+) postlogd writes to maillog_file:
	// "Nov 05 10:49:00 mx1 postfix/smtpd[8965]: ...". msg_logger.c formats the
	// stamp with strftime "%b %d %H:%M:%S " (day padded with a zero) followed by
	// the first label of myhostname. Only Postfix lines appear in this format.
	FormatMaillog
)

var formatNames = []string{"bsd", "rfc3339", "maillog"}

func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return "invalid"
}

// ParseFormat is the inverse of Format.String.
func ParseFormat(s string) (Format, error) {
	for i, n := range formatNames {
		if n == s {
			return Format(i), nil
		}
	}
	return 0, fmt.Errorf("loggen: unknown format %q (want bsd, rfc3339 or maillog)", s)
}

// QueueIDStyle selects the Postfix queue id format.
type QueueIDStyle uint8

const (
	// QueueIDMixed uses short ids for about 90% of the messages and long ids
	// (enable_long_queue_ids = yes) for the rest, to exercise parsers.
	QueueIDMixed QueueIDStyle = iota
	QueueIDShort              // e.g. 4F2B93E1A7C
	QueueIDLong               // e.g. 4dLq3X1mKkz9Rt2
)

// Config controls the generator. The zero value, plus Lines, is usable.
type Config struct {
	Lines  int    // number of lines to write (required, > 0)
	Seed   uint64 // PCG seed
	Format Format
	Host   string // syslog host name; default "mx1"
	// Start is the time of the first line; its Location is used for the
	// stamps. Default: 2025-11-29 20:00:00 +01:00, so that a million lines
	// run over a month boundary into single-digit days.
	Start time.Time
	// MeanGap is the average time between two lines (scaled by a day/night
	// curve); default 250ms, i.e. about 345,000 lines a day.
	MeanGap     time.Duration
	Concurrency int // simultaneous sessions interleaved; default 12
	QueueIDs    QueueIDStyle
}

// Stats summarises what Generate wrote.
type Stats struct {
	Lines       int
	Evidence    int // lines that are evidence against a client
	Postfix     int // lines from postfix/* programs
	First, Last time.Time
	Bytes       int64
}

const defaultHost = "mx1"

func (c Config) withDefaults() (Config, error) {
	if c.Lines <= 0 {
		return c, errors.New("loggen: Lines must be positive")
	}
	if c.Format > FormatMaillog {
		return c, fmt.Errorf("loggen: invalid format %d", c.Format)
	}
	if c.Host == "" {
		c.Host = defaultHost
	}
	if strings.ContainsAny(c.Host, " \n\t") {
		return c, fmt.Errorf("loggen: invalid host %q", c.Host)
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2025, time.November, 29, 20, 0, 0, 0, time.FixedZone("CET", 3600))
	}
	if c.MeanGap <= 0 {
		c.MeanGap = 250 * time.Millisecond
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 12
	}
	return c, nil
}

// Generate writes cfg.Lines lines to w.
func Generate(w io.Writer, cfg Config) (Stats, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Stats{}, err
	}
	g := newGen(cfg)
	bw := bufio.NewWriterSize(w, 256<<10)
	st := Stats{First: time.UnixMicro(g.now).In(cfg.Start.Location())}
	for st.Lines < cfg.Lines {
		for len(g.active) < g.cfg.Concurrency {
			g.active = append(g.active, g.newSession())
		}
		i := g.r.IntN(len(g.active))
		s := g.active[i]
		line, evid, postfix := s.pop()
		g.advance()
		g.writeStamp(bw)
		n, _ := bw.Write(line)
		bw.WriteByte('\n')
		st.Bytes += int64(len(g.stamp) + n + 1)
		st.Lines++
		if evid {
			st.Evidence++
		}
		if postfix {
			st.Postfix++
		}
		if s.done() {
			g.release(s)
			last := len(g.active) - 1
			g.active[i] = g.active[last]
			g.active = g.active[:last]
		}
	}
	st.Last = time.UnixMicro(g.now).In(cfg.Start.Location())
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("loggen: write: %w", err)
	}
	return st, nil
}

type gen struct {
	cfg Config
	r   *rand.Rand
	now int64 // unix microseconds of the last line

	active []*session
	free   []*session

	good, bad, users []client

	pid                                    int
	smtpd, subm                            pidPool
	cleanup, local, lmtp, smtp, bounce     pidPool
	pickup, dnsblog, dovecot               pidPool
	postscreenPID, qmgrPID, anvilPID, boot int

	// stamp cache: the prefix for the current second.
	stampSec int64
	stamp    []byte // formatted prefix of the last line written
	secPart  []byte // rfc3339: "2025-11-29T20:00:01"
	zonePart []byte // rfc3339: "+01:00 mx1 "
}

func newGen(cfg Config) *gen {
	g := &gen{
		cfg:      cfg,
		r:        rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		now:      cfg.Start.UnixMicro(),
		pid:      1200,
		stampSec: -1 << 62,
	}
	g.initPools()
	g.postscreenPID = g.newPID()
	g.qmgrPID = g.newPID()
	g.anvilPID = g.newPID()
	g.boot = 86400*3 + g.r.IntN(86400*30)
	for _, p := range []*pidPool{&g.cleanup, &g.local, &g.lmtp, &g.smtp, &g.bounce, &g.pickup, &g.dnsblog, &g.dovecot} {
		p.init(g, 4)
	}
	return g
}

// advance moves the clock by a random, exponentially distributed gap that is
// longer at night and shorter in office hours.
func (g *gen) advance() {
	h := time.UnixMicro(g.now).In(g.cfg.Start.Location()).Hour()
	f := 1.0
	switch {
	case h < 6:
		f = 2.0
	case h >= 8 && h < 18:
		f = 0.7
	}
	gap := int64(g.r.ExpFloat64() * f * float64(g.cfg.MeanGap.Microseconds()))
	g.now += gap
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func append2(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }

// writeStamp writes the syslog prefix (stamp and host) of a line at g.now.
func (g *gen) writeStamp(bw *bufio.Writer) {
	sec := g.now / 1e6
	if sec != g.stampSec {
		g.stampSec = sec
		t := time.Unix(sec, 0).In(g.cfg.Start.Location())
		switch g.cfg.Format {
		case FormatRFC3339:
			g.secPart = t.AppendFormat(g.secPart[:0], "2006-01-02T15:04:05")
			g.zonePart = t.AppendFormat(g.zonePart[:0], "Z07:00")
			g.zonePart = append(append(append(g.zonePart, ' '), g.cfg.Host...), ' ')
		default:
			b := append(g.stamp[:0], months[t.Month()-1]...)
			b = append(b, ' ')
			if d := t.Day(); d < 10 && g.cfg.Format == FormatBSD {
				b = append(b, ' ', byte('0'+d))
			} else {
				b = append2(b, d)
			}
			b = append(b, ' ')
			b = append2(b, t.Hour())
			b = append(b, ':')
			b = append2(b, t.Minute())
			b = append(b, ':')
			b = append2(b, t.Second())
			b = append(b, ' ')
			b = append(b, g.cfg.Host...)
			g.stamp = append(b, ' ')
		}
	}
	if g.cfg.Format == FormatRFC3339 {
		us := int(g.now % 1e6)
		b := append(g.stamp[:0], g.secPart...)
		b = append(b, '.')
		for d := 100000; d > 0; d /= 10 {
			b = append(b, byte('0'+us/d%10))
		}
		g.stamp = append(b, g.zonePart...)
	}
	bw.Write(g.stamp)
}

// newPID returns the next process id, as the kernel hands them out.
func (g *gen) newPID() int {
	g.pid += 1 + g.r.IntN(60)
	if g.pid > 4194304 {
		g.pid = 1000
	}
	return g.pid
}

// pidPool models a set of processes of one Postfix daemon. smtpd processes
// serve one session at a time and exit after max_use (100) sessions.
type pidPool struct {
	slots []*pidSlot
}

type pidSlot struct {
	pid, uses int
	busy      bool
}

func (p *pidPool) init(g *gen, n int) {
	for range n {
		p.slots = append(p.slots, &pidSlot{pid: g.newPID()})
	}
}

// any returns a pid of the pool, occasionally replacing an idle process.
func (p *pidPool) any(g *gen) int {
	s := p.slots[g.r.IntN(len(p.slots))]
	if s.uses++; s.uses > 100+g.r.IntN(50) {
		s.pid, s.uses = g.newPID(), 0
	}
	return s.pid
}

// acquire returns an idle process (or starts one) and marks it busy.
func (p *pidPool) acquire(g *gen) *pidSlot {
	var s *pidSlot
	if n := len(p.slots); n > 0 {
		off := g.r.IntN(n)
		for i := range n {
			if c := p.slots[(off+i)%n]; !c.busy {
				s = c
				break
			}
		}
	}
	if s == nil {
		s = &pidSlot{pid: g.newPID()}
		p.slots = append(p.slots, s)
	}
	if s.uses >= 100 {
		s.pid, s.uses = g.newPID(), 0
	}
	s.uses++
	s.busy = true
	return s
}

const qidDigits = "0123456789ABCDEF"

// base52 is the alphabet of long queue ids (no vowels, no 'z').
const base52 = "0123456789BCDFGHJKLMNPQRSTVWXYbcdfghjklmnpqrstvwxy"

// queueID returns a fresh queue id in the configured style.
func (g *gen) queueID() string {
	long := g.cfg.QueueIDs == QueueIDLong || (g.cfg.QueueIDs == QueueIDMixed && g.r.IntN(10) == 0)
	var b [16]byte
	if long {
		// seconds (6) + microseconds (4) + 'z' + inode (3..5)
		sec, us := g.now/1e6, g.now%1e6
		for i := 5; i >= 0; i-- {
			b[i] = base52[sec%int64(len(base52))]
			sec /= int64(len(base52))
		}
		for i := 9; i >= 6; i-- {
			b[i] = base52[us%int64(len(base52))]
			us /= int64(len(base52))
		}
		b[10] = 'z'
		n := 11 + 3 + g.r.IntN(3)
		for i := 11; i < n; i++ {
			b[i] = base52[g.r.IntN(len(base52))]
		}
		return string(b[:n])
	}
	// microseconds (5 hex digits) + inode number (5..7 hex digits)
	us := g.now % 1e6
	for i := 4; i >= 0; i-- {
		b[i] = qidDigits[us&15]
		us >>= 4
	}
	n := 5 + 5 + g.r.IntN(3)
	b[5] = qidDigits[1+g.r.IntN(15)]
	for i := 6; i < n; i++ {
		b[i] = qidDigits[g.r.IntN(16)]
	}
	return string(b[:n])
}

// session holds the pre-rendered lines (without the syslog prefix) of one
// simulated connection or job; Generate interleaves sessions line by line.
type session struct {
	buf     []byte
	ends    []int
	flags   []uint8
	next    int
	hold    *pidSlot
	postfix bool // current line is a postfix/* line
}

const (
	flagEvidence = 1 << iota
	flagPostfix
)

func (s *session) reset() {
	s.buf, s.ends, s.flags = s.buf[:0], s.ends[:0], s.flags[:0]
	s.next, s.hold = 0, nil
}

func (s *session) done() bool { return s.next >= len(s.ends) }

func (s *session) pop() (line []byte, evidence, postfix bool) {
	start := 0
	if s.next > 0 {
		start = s.ends[s.next-1]
	}
	line, f := s.buf[start:s.ends[s.next]], s.flags[s.next]
	s.next++
	return line, f&flagEvidence != 0, f&flagPostfix != 0
}

// pf starts a line of a Postfix program: "postfix/<prog>[<pid>]: ".
func (s *session) pf(prog string, pid int) *session {
	s.buf = append(s.buf, "postfix/"...)
	s.postfix = true
	return s.tag(prog, pid)
}

// prog starts a line of another program.
func (s *session) prog(prog string, pid int) *session {
	s.postfix = false
	return s.tag(prog, pid)
}

func (s *session) tag(prog string, pid int) *session {
	s.buf = append(s.buf, prog...)
	s.buf = append(s.buf, '[')
	s.buf = strconv.AppendInt(s.buf, int64(pid), 10)
	s.buf = append(s.buf, "]: "...)
	return s
}

func (s *session) a(parts ...string) *session {
	for _, p := range parts {
		s.buf = append(s.buf, p...)
	}
	return s
}

func (s *session) n(v int) *session {
	s.buf = strconv.AppendInt(s.buf, int64(v), 10)
	return s
}

// secs appends a duration in seconds the way Postfix prints delays:
// "0", "0.07", "1.2", "31".
func (s *session) secs(ms int) *session {
	switch {
	case ms >= 10000:
		return s.n(ms / 1000)
	case ms >= 1000:
		s.n(ms / 1000)
		if d := ms % 1000 / 100; d != 0 {
			s.buf = append(s.buf, '.', byte('0'+d))
		}
		return s
	case ms >= 10:
		cs := ms / 10
		s.buf = append(s.buf, '0', '.', byte('0'+cs/10))
		if cs%10 != 0 {
			s.buf = append(s.buf, byte('0'+cs%10))
		}
		return s
	default:
		return s.a("0")
	}
}

// end finishes the current line.
func (s *session) end(evidence bool) {
	var f uint8
	if evidence {
		f |= flagEvidence
	}
	if s.postfix {
		f |= flagPostfix
	}
	s.ends = append(s.ends, len(s.buf))
	s.flags = append(s.flags, f)
}

func (g *gen) newSession() *session {
	var s *session
	if n := len(g.free); n > 0 {
		s = g.free[n-1]
		g.free = g.free[:n-1]
	} else {
		s = &session{}
	}
	s.reset()
	for s.done() {
		g.fill(s)
	}
	return s
}

func (g *gen) release(s *session) {
	if s.hold != nil {
		s.hold.busy = false
		s.hold = nil
	}
	g.free = append(g.free, s)
}
