package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		code    int
		lines   int
		prefix  string // of the first line
		errText string
	}{
		{args: []string{"-lines", "10"}, lines: 10, prefix: "Nov 29 20:00:00 mx1 "},
		{args: []string{"-lines", "5", "-format", "rfc3339", "-host", "mail"}, lines: 5, prefix: "2025-11-29T20:00:00."},
		{args: []string{"-lines", "5", "-format", "maillog", "-start", "2026-03-02T08:00:00Z"}, lines: 5, prefix: "Mar 02 08:00:00 mx1 postfix/"},
		{args: []string{"-lines", "5", "-format", "bsd", "-start", "2026-03-02T08:00:00Z"}, lines: 5, prefix: "Mar  2 08:00:00 mx1 "},
		{args: []string{"-lines", "3", "-stats"}, lines: 3, errText: "mxgen: 3 lines"},
		{args: []string{"-format", "json"}, code: 2, errText: "unknown format"},
		{args: []string{"-queue-ids", "medium"}, code: 2, errText: "-queue-ids"},
		{args: []string{"-lines", "0"}, code: 2, errText: "positive"},
		{args: []string{"-start", "yesterday"}, code: 2, errText: "-start"},
		{args: []string{"extra"}, code: 2, errText: "unexpected argument"},
		{args: []string{"-nosuchflag"}, code: 2, errText: "not defined"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, code, tc.code, errb.String())
			continue
		}
		if tc.errText != "" && !strings.Contains(errb.String(), tc.errText) {
			t.Errorf("%v: stderr %q does not mention %q", tc.args, errb.String(), tc.errText)
		}
		if code != 0 {
			continue
		}
		if n := strings.Count(out.String(), "\n"); n != tc.lines {
			t.Errorf("%v: %d lines, want %d", tc.args, n, tc.lines)
		}
		if !strings.HasPrefix(out.String(), tc.prefix) {
			t.Errorf("%v: output starts %q, want prefix %q", tc.args, out.String()[:40], tc.prefix)
		}
	}
}
