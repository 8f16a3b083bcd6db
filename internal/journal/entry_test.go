package journal

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestParseEntryLine(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"syslog pid", `{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1796119200123456","_HOSTNAME":"mx1","SYSLOG_IDENTIFIER":"postfix/smtpd","SYSLOG_PID":"123","_PID":"9","MESSAGE":"connect from unknown[203.0.113.5]"}`,
			"2026-12-01T10:00:00.123456+00:00 mx1 postfix/smtpd[123]: connect from unknown[203.0.113.5]"},
		{"_PID when no SYSLOG_PID", `{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1796119200000000","_HOSTNAME":"mx1","SYSLOG_IDENTIFIER":"postfix-in/qmgr","_PID":"9","MESSAGE":"x"}`,
			"2026-12-01T10:00:00.000000+00:00 mx1 postfix-in/qmgr[9]: x"},
		{"binary message, no host", `{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1796119200000000","SYSLOG_IDENTIFIER":"postfix/smtp","MESSAGE":[104,105,10,255]}`,
			"2026-12-01T10:00:00.000000+00:00 localhost postfix/smtp: hi \xff"},
		{"field given twice", `{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1796119200000000","SYSLOG_IDENTIFIER":["postfix/smtpd","other"],"MESSAGE":"m"}`,
			"2026-12-01T10:00:00.000000+00:00 localhost postfix/smtpd: m"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseEntry([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			if got := e.Line(); got != tc.want {
				t.Errorf("Line() = %q, want %q", got, tc.want)
			}
		})
	}
	for _, bad := range []string{`{"__CURSOR":"c"}`, `{"__REALTIME_TIMESTAMP":"1"}`, `not json`} {
		if _, err := ParseEntry([]byte(bad)); err == nil {
			t.Errorf("ParseEntry(%s) succeeded", bad)
		}
	}
}

func TestFilter(t *testing.T) {
	tests := []struct {
		spec    string
		match   []string
		nomatch []string
		args    int // journalctl matches
	}{
		{"journal", []string{"postfix/smtpd", "postfix-in/smtpd", "postfix/postlog"}, []string{"postfix", "postfixadmin/x", "CRON", "dovecot"}, 0},
		{"journal:postfix/smtpd,postfix/postscreen", []string{"postfix/smtpd", "postfix/postscreen"}, []string{"postfix/smtp", "postfix-in/smtpd"}, 2},
		{"journal:postfix-out/,postfix/smtp*", []string{"postfix-out/qmgr", "postfix/smtpd", "postfix/smtp"}, []string{"postfix/qmgr"}, 0},
	}
	for _, tc := range tests {
		f, err := NewFilter(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		for _, id := range tc.match {
			if !f.Match(id) {
				t.Errorf("%s does not match %s", tc.spec, id)
			}
		}
		for _, id := range tc.nomatch {
			if f.Match(id) {
				t.Errorf("%s matches %s", tc.spec, id)
			}
		}
		if got := len(f.Matches()); got != tc.args {
			t.Errorf("%s: %d journalctl matches, want %d", tc.spec, got, tc.args)
		}
	}
	for _, bad := range []string{"journal:", "journal:a,,b", "journal:*", "journalx", "journal:a b", "journal:A=B"} {
		if _, err := NewFilter(bad); err == nil {
			t.Errorf("NewFilter(%q) succeeded", bad)
		}
	}
}

// zeros is n bytes of 'a', made as they are read.
type zeros struct{ n int }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	n := min(len(p), z.n)
	for i := range n {
		p[i] = 'a'
	}
	z.n -= n
	return n, nil
}

// A line longer than any entry, starting with "{", passes through a slice
// at a time (the reader behind counts it too long): memory stays bounded,
// and the entry after it is still converted.
func TestJSONReaderLongLineBounded(t *testing.T) {
	entry := `{"__CURSOR":"s=x;i=1","__REALTIME_TIMESTAMP":"1764118000000000","_HOSTNAME":"mx","SYSLOG_IDENTIFIER":"postfix/smtpd","_PID":"7","MESSAGE":"connect from a.example[192.0.2.7]"}`
	in := io.MultiReader(strings.NewReader("{"), &zeros{n: 32 << 20}, strings.NewReader("\n"+entry+"\n"))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var tail bytes.Buffer
	n, err := io.Copy(&tailWriter{keep: 200, buf: &tail}, NewJSONReader(in))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if n < 32<<20 {
		t.Errorf("passed %d bytes, want the whole long line", n)
	}
	if !strings.Contains(tail.String(), "mx postfix/smtpd[7]: connect from a.example[192.0.2.7]\n") {
		t.Errorf("entry after the long line not converted: %q", tail.String())
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("allocated %d MB for a 32 MB line", alloc>>20)
	}
}

// tailWriter keeps the last keep bytes written.
type tailWriter struct {
	keep int
	buf  *bytes.Buffer
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if extra := w.buf.Len() - w.keep; extra > 0 {
		w.buf.Next(extra)
	}
	return len(p), nil
}

// Whatever an entry holds, it renders as one line; an entry that parses
// keeps its message's text (line breaks become spaces).
func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(`{"__CURSOR":"s=x;i=1","__REALTIME_TIMESTAMP":"1764118000000000","_HOSTNAME":"mx","SYSLOG_IDENTIFIER":"postfix/smtpd","_PID":"7","MESSAGE":"connect from a.example[192.0.2.7]"}`))
	f.Add([]byte(`{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"postfix/smtpd\n2026-01-01T00:00:00+00:00 mx postfix/smtpd[1]: forged","MESSAGE":[104,105,10,33]}`))
	f.Add([]byte(`{"MESSAGE":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEntry(b)
		if err != nil {
			return
		}
		if l := e.Line(); strings.ContainsAny(l, "\r\n") {
			t.Errorf("entry renders as more than one line: %q", l)
		}
	})
}
