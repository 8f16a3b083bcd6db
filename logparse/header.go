package logparse

import (
	"errors"
	"strings"
	"time"
)

// ErrNotPostfix means the line has no syslog header or comes from another
// program. Like ErrUnrecognized it is expected: count it, skip it.
var ErrNotPostfix = errors.New("logparse: not a Postfix line")

// Parser parses lines. It caches the last timestamp (consecutive lines
// mostly share their second) and remembers the client of each smtpd
// process (a "TLS library problem" warning names none), so it is not safe
// for concurrent use: give each goroutine its own Parser, and feed one
// log's lines to one Parser in order.
type Parser struct {
	// Loc is the zone of timestamps that carry none (BSD syslog and
	// maillog_file stamps). Nil means time.Local.
	Loc *time.Location
	// Ref anchors the year of BSD stamps, which carry none: a stamp that
	// would lie more than a week after Ref belongs to the year before. Use
	// the file's modification time for old logs; zero means the wall clock.
	Ref time.Time

	// one-entry cache of the last timestamp prefix (up to whole seconds)
	cacheKey [32]byte
	cacheLen int
	cacheT   time.Time
	zones    map[int]*time.Location

	// the client each smtpd process serves, for lines that name none
	sessions sessions
}

// NewParser returns a Parser for timestamps in loc (nil: time.Local) with
// year inference anchored at ref (zero: the wall clock).
func NewParser(loc *time.Location, ref time.Time) *Parser {
	return &Parser{Loc: loc, Ref: ref}
}

// header is what precedes the message in every syslog line.
type header struct {
	t       time.Time
	host    string
	program string // "postfix/smtpd"
	daemon  string // last component: "smtpd"
	pid     int
	msg     string
}

var errBadHeader = ErrNotPostfix

func (p *Parser) parseHeader(line string) (h header, err error) {
	var rest string
	switch {
	case len(line) >= 16 && line[3] == ' ' && line[6] == ' ' && line[9] == ':' && line[12] == ':':
		h.t, rest, err = p.parseBSD(line, 15)
	case len(line) >= 15 && line[3] == ' ' && line[5] == ' ' && line[8] == ':' && line[11] == ':':
		// "Mar 7 02:09:33": a syslog daemon that pads a one-digit day
		// with nothing instead of a space
		h.t, rest, err = p.parseBSD(line, 14)
	case len(line) >= 20 && line[4] == '-' && line[7] == '-' && line[10] == 'T':
		h.t, rest, err = p.parseISO(line)
	default:
		return h, errBadHeader
	}
	if err != nil {
		return h, err
	}
	// "host program[pid]: msg" or, without a host, "program[pid]: msg".
	tok, after, ok := strings.Cut(rest, " ")
	if !ok {
		return h, errBadHeader
	}
	if !isTag(tok) {
		h.host = tok
		tok, after, ok = strings.Cut(after, " ")
		if !ok || !isTag(tok) {
			return h, errBadHeader
		}
	}
	h.msg = after
	tok = tok[:len(tok)-1] // drop ':'
	if i := strings.IndexByte(tok, '['); i >= 0 {
		if tok[len(tok)-1] != ']' || i+1 >= len(tok)-1 {
			return h, errBadHeader
		}
		pid, ok := atoi(tok[i+1 : len(tok)-1])
		if !ok {
			return h, errBadHeader
		}
		h.pid = pid
		tok = tok[:i]
	}
	slash := strings.LastIndexByte(tok, '/')
	if slash < 0 {
		return h, ErrNotPostfix
	}
	h.program = tok
	h.daemon = tok[slash+1:]
	if !knownDaemon(h.daemon) {
		return h, ErrNotPostfix
	}
	return h, nil
}

// isTag reports whether tok looks like a syslog tag: "prog[pid]:" or "prog:".
func isTag(tok string) bool {
	return len(tok) > 1 && tok[len(tok)-1] == ':'
}

func knownDaemon(d string) bool {
	switch d {
	case "smtpd", "postscreen", "cleanup", "qmgr", "smtp", "lmtp", "local", "virtual",
		"pipe", "error", "retry", "discard", "bounce", "pickup", "master", "anvil",
		"dnsblog", "tlsproxy", "trivial-rewrite", "postfix-script", "sendmail", "postdrop",
		"scache", "verify", "flush", "showq", "postlogd", "postsuper", "oqmgr", "tlsmgr":
		return true
	}
	return false
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func monthOf(s string) time.Month {
	for i, m := range months {
		if s == m {
			return time.Month(i + 1)
		}
	}
	return 0
}

// parseBSD reads "Nov  5 10:49:00" (syslog), "Nov 05 10:49:00.123456"
// (Postfix maillog_file) or "Nov 5 10:49:00" (n = 14, the stamp's length)
// and returns the rest after the following space.
func (p *Parser) parseBSD(line string, n int) (time.Time, string, error) {
	key := line[:n]
	end := n
	nanos := 0
	if line[n] == '.' {
		end = n + 1
		n, digits := 0, 0
		for end < len(line) && line[end] >= '0' && line[end] <= '9' {
			if digits < 9 {
				n = n*10 + int(line[end]-'0')
				digits++
			}
			end++
		}
		for ; digits < 9 && digits > 0; digits++ {
			n *= 10
		}
		nanos = n
	}
	if end >= len(line) || line[end] != ' ' {
		return time.Time{}, "", errBadHeader
	}
	rest := line[end+1:]
	if p.cacheLen == len(key) && string(p.cacheKey[:p.cacheLen]) == key {
		if nanos == 0 {
			return p.cacheT, rest, nil
		}
		return p.cacheT.Add(time.Duration(nanos)), rest, nil
	}
	mon := monthOf(key[:3])
	d := n - 15 // -1 when the day is one digit without padding
	day, ok1 := atoi(strings.TrimLeft(key[4:6+d], " "))
	hh, ok2 := atoi2(key[7+d : 9+d])
	mm, ok3 := atoi2(key[10+d : 12+d])
	ss, ok4 := atoi2(key[13+d : 15+d])
	if mon == 0 || !ok1 || !ok2 || !ok3 || !ok4 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, "", errBadHeader
	}
	loc := p.Loc
	if loc == nil {
		loc = time.Local
	}
	ref := p.Ref
	if ref.IsZero() {
		ref = time.Now()
	}
	ref = ref.In(loc)
	t := time.Date(ref.Year(), mon, day, hh, mm, ss, 0, loc)
	if t.After(ref.Add(7 * 24 * time.Hour)) {
		t = time.Date(ref.Year()-1, mon, day, hh, mm, ss, 0, loc)
	}
	p.cacheLen = copy(p.cacheKey[:], key)
	p.cacheT = t
	return t.Add(time.Duration(nanos)), rest, nil
}

// parseISO reads RFC 3339 stamps (rsyslog high precision,
// "2026-11-25T10:49:00.123456+01:00") and journalctl's short-iso
// ("2026-11-25T10:49:00+0100").
func (p *Parser) parseISO(line string) (time.Time, string, error) {
	sp := strings.IndexByte(line, ' ')
	if sp < 20 || sp > 40 {
		return time.Time{}, "", errBadHeader
	}
	stamp, rest := line[:sp], line[sp+1:]
	// split "YYYY-MM-DDTHH:MM:SS" [".frac"] zone
	base := stamp[:19]
	if base[13] != ':' || base[16] != ':' {
		return time.Time{}, "", errBadHeader
	}
	i := 19
	nanos := 0
	if i < len(stamp) && (stamp[i] == '.' || stamp[i] == ',') {
		i++
		n, digits := 0, 0
		for i < len(stamp) && stamp[i] >= '0' && stamp[i] <= '9' {
			if digits < 9 {
				n = n*10 + int(stamp[i]-'0')
				digits++
			}
			i++
		}
		if digits == 0 {
			return time.Time{}, "", errBadHeader
		}
		for ; digits < 9; digits++ {
			n *= 10
		}
		nanos = n
	}
	zone := stamp[i:]
	// cache key: base + zone (fraction excluded)
	if p.cacheLen == len(base)+len(zone) && string(p.cacheKey[:19]) == base && string(p.cacheKey[19:p.cacheLen]) == zone {
		return p.cacheT.Add(time.Duration(nanos)), rest, nil
	}
	year, ok0 := atoi(base[0:4])
	mon, ok1 := atoi2(base[5:7])
	day, ok2 := atoi2(base[8:10])
	hh, ok3 := atoi2(base[11:13])
	mm, ok4 := atoi2(base[14:16])
	ss, ok5 := atoi2(base[17:19])
	if !ok0 || !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, "", errBadHeader
	}
	loc, ok := p.zone(zone)
	if !ok {
		return time.Time{}, "", errBadHeader
	}
	t := time.Date(year, time.Month(mon), day, hh, mm, ss, 0, loc)
	if len(zone) <= len(p.cacheKey)-19 {
		copy(p.cacheKey[:], base)
		p.cacheLen = 19 + copy(p.cacheKey[19:], zone)
		p.cacheT = t
	}
	return t.Add(time.Duration(nanos)), rest, nil
}

// zone parses "Z", "+01:00" or "+0100"; an empty zone means p.Loc.
func (p *Parser) zone(z string) (*time.Location, bool) {
	if z == "" {
		if p.Loc == nil {
			return time.Local, true
		}
		return p.Loc, true
	}
	if z == "Z" || z == "z" {
		return time.UTC, true
	}
	if len(z) != 6 && len(z) != 5 || (z[0] != '+' && z[0] != '-') {
		return nil, false
	}
	hh, ok1 := atoi2(z[1:3])
	mmStr := z[3:5]
	if len(z) == 6 {
		if z[3] != ':' {
			return nil, false
		}
		mmStr = z[4:6]
	}
	mm, ok2 := atoi2(mmStr)
	if !ok1 || !ok2 || hh > 23 || mm > 59 {
		return nil, false
	}
	off := hh*3600 + mm*60
	if z[0] == '-' {
		off = -off
	}
	if off == 0 {
		return time.UTC, true
	}
	if loc, ok := p.zones[off]; ok {
		return loc, true
	}
	if p.zones == nil {
		p.zones = make(map[int]*time.Location)
	}
	if len(p.zones) > 64 { // bounded: junk input must not grow it
		clear(p.zones)
	}
	loc := time.FixedZone("", off)
	p.zones[off] = loc
	return loc, true
}

// atoi parses a short non-negative decimal without allocating.
func atoi(s string) (int, bool) {
	if len(s) == 0 || len(s) > 9 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func atoi2(s string) (int, bool) {
	if len(s) != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' {
		return 0, false
	}
	return int(s[0]-'0')*10 + int(s[1]-'0'), true
}
