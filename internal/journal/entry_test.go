package journal

import (
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
