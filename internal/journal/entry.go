// Package journal reads Postfix's log lines from the systemd journal, for
// the hosts (Debian 12 and later without rsyslog) where Postfix logs
// nowhere else.
//
// # Why journalctl and not a Go journal library
//
// The journal file format is read by libsystemd's sd-journal, which needs
// cgo (github.com/coreos/go-systemd/sdjournal links it at run time), and
// mxguard is built with CGO_ENABLED=0. The pure-Go readers of the file
// format are partial and unmaintained (no compact mode, no zstd, no
// following of rotated and vacuumed files). journalctl is the reader the
// journal's own authors keep in step with its format; it is present
// wherever journald is. So the follower runs
//
//	journalctl --follow --output=json --no-tail [--cursor C] [SYSLOG_IDENTIFIER=ID ...]
//
// as a supervised child (no shell; restarted with a backoff when it exits;
// its stderr logged), and reads one JSON object per line.
//
// Each entry becomes the syslog line Postfix would have written to a file,
// stamped with the journal's receive time (__REALTIME_TIMESTAMP) in UTC in
// RFC 3339, so the log parser needs no time zone guess:
//
//	2026-12-01T10:00:00.123456+00:00 HOST postfix/smtpd[123]: MESSAGE
package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Entry is the part of a journal entry a Postfix log line is made of.
type Entry struct {
	Cursor     string
	Time       time.Time // __REALTIME_TIMESTAMP
	Host       string    // _HOSTNAME
	Identifier string    // SYSLOG_IDENTIFIER
	PID        string    // SYSLOG_PID, else _PID
	Message    string
}

// ParseEntry decodes one line of `journalctl --output=json`. A field's
// value is a string, an array of bytes (a value that is not valid UTF-8,
// or has control characters) or, for a field given more than once, an
// array of those; the first value is used.
func ParseEntry(line []byte) (Entry, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return Entry{}, fmt.Errorf("journal entry: %w", err)
	}
	str := func(k string) string {
		v, ok := raw[k]
		if !ok {
			return ""
		}
		s, _ := fieldString(v)
		return s
	}
	e := Entry{
		Cursor:     str("__CURSOR"),
		Host:       str("_HOSTNAME"),
		Identifier: str("SYSLOG_IDENTIFIER"),
		PID:        str("SYSLOG_PID"),
		Message:    str("MESSAGE"),
	}
	if e.PID == "" {
		e.PID = str("_PID")
	}
	us, err := strconv.ParseInt(str("__REALTIME_TIMESTAMP"), 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("journal entry %s: __REALTIME_TIMESTAMP: %w", e.Cursor, err)
	}
	e.Time = time.UnixMicro(us).UTC()
	if e.Cursor == "" {
		return Entry{}, errors.New("journal entry without __CURSOR")
	}
	return e, nil
}

// fieldString decodes one field value (see ParseEntry).
func fieldString(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(v, &arr); err != nil {
		return "", err
	}
	if len(arr) == 0 {
		return "", nil
	}
	var b []byte
	for _, x := range arr {
		var n int
		if err := json.Unmarshal(x, &n); err != nil {
			return fieldString(arr[0]) // an array of values: the first
		}
		b = append(b, byte(n))
	}
	return string(b), nil
}

// Line renders e as a syslog line the log parser reads unchanged. Line
// breaks inside the message become spaces: one entry is one line. Host,
// identifier and pid are single words: any local user can set an
// identifier, and a line break in it must not start a forged line.
func (e Entry) Line() string {
	host := word(e.Host)
	if host == "" {
		host = "localhost"
	}
	ident, pid := word(e.Identifier), word(e.PID)
	var b strings.Builder
	b.Grow(len(e.Message) + len(ident) + len(host) + 48)
	b.WriteString(e.Time.Format("2006-01-02T15:04:05.000000-07:00"))
	b.WriteByte(' ')
	b.WriteString(host)
	b.WriteByte(' ')
	b.WriteString(ident)
	if pid != "" {
		b.WriteByte('[')
		b.WriteString(pid)
		b.WriteByte(']')
	}
	b.WriteString(": ")
	b.WriteString(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(e.Message))
	return b.String()
}

// word replaces blanks and control characters in s with '?'.
func word(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// Filter selects entries by SYSLOG_IDENTIFIER.
type Filter struct {
	exact    []string
	prefixes []string
}

// NewFilter parses a logs entry: "journal" (every Postfix instance:
// identifiers such as postfix/smtpd and postfix-in/smtpd) or
// "journal:ID1,ID2" (an ID ending in "/" or "*" is a prefix, "*" dropped;
// any other ID must match exactly).
func NewFilter(spec string) (Filter, error) {
	rest, ok := strings.CutPrefix(spec, "journal")
	if !ok || (rest != "" && !strings.HasPrefix(rest, ":")) {
		return Filter{}, fmt.Errorf("%q: want journal or journal:ID1,ID2", spec)
	}
	if rest == "" {
		return Filter{}, nil
	}
	var f Filter
	for id := range strings.SplitSeq(rest[1:], ",") {
		id = strings.TrimSpace(id)
		switch {
		case id == "" || id == "*":
			return Filter{}, fmt.Errorf("%q: empty identifier", spec)
		case strings.ContainsAny(id, " \t\n="):
			return Filter{}, fmt.Errorf("%q: identifier %q has a space or =", spec, id)
		case strings.HasSuffix(id, "*"):
			f.prefixes = append(f.prefixes, strings.TrimSuffix(id, "*"))
		case strings.HasSuffix(id, "/"):
			f.prefixes = append(f.prefixes, id)
		default:
			f.exact = append(f.exact, id)
		}
	}
	return f, nil
}

// IsJournal tells whether a logs entry names the journal rather than a file.
func IsJournal(spec string) bool {
	return spec == "journal" || strings.HasPrefix(spec, "journal:")
}

// Match tells whether an entry with this SYSLOG_IDENTIFIER is selected.
func (f Filter) Match(id string) bool {
	if len(f.exact) == 0 && len(f.prefixes) == 0 {
		// every Postfix instance: postfix/..., postfix-NAME/...
		name, _, ok := strings.Cut(id, "/")
		return ok && (name == "postfix" || strings.HasPrefix(name, "postfix-"))
	}
	for _, x := range f.exact {
		if id == x {
			return true
		}
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// Matches are the journalctl match arguments that select the same
// entries, when journalctl can express them (exact identifiers only);
// nil means every entry is read and Match filters.
func (f Filter) Matches() []string {
	if len(f.prefixes) > 0 || len(f.exact) == 0 {
		return nil
	}
	m := make([]string, len(f.exact))
	for i, x := range f.exact {
		m[i] = "SYSLOG_IDENTIFIER=" + x
	}
	return m
}
