package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/report"
)

var update = flag.Bool("update", false, "rewrite golden files")

// runCmd runs mxguard in-process and returns exit code, stdout, stderr.
func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}
	code := run(e, args)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	unreadable := filepath.Join(dir, "dir")
	os.Mkdir(unreadable, 0o755)
	nothingToDo := filepath.Join(dir, "nothing.yaml")
	os.WriteFile(nothingToDo, []byte("logs: []\nstate_dir: "+filepath.Join(dir, "state")+"\ncontrol_socket: "+filepath.Join(dir, "ctl.sock")+"\n"), 0o600)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no command", nil, 2, "usage: mxguard"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"help", []string{"--help"}, 0, ""},
		{"report help", []string{"report", "--help"}, 0, ""},
		{"unknown flag", []string{"report", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad format", []string{"report", "--format", "xml", "-"}, 2, `--format "xml": want one of table, json, csv`},
		{"bad top", []string{"report", "--top", "0"}, 2, "--top 0"},
		{"capacity below top", []string{"report", "--capacity", "5"}, 2, "--capacity 5: must be at least --top (10)"},
		{"bad since", []string{"report", "--since", "yesterday"}, 2, `--since "yesterday"`},
		{"missing file", []string{"report", filepath.Join(dir, "nope.log")}, 1, "nope.log: no such file or directory"},
		{"directory", []string{"report", unreadable}, 1, "is a directory"},
		{"events missing file", []string{"events", filepath.Join(dir, "nope.log")}, 1, "nope.log"},
		{"events bad kind", []string{"events", "--kind", "bogus"}, 2, `--kind "bogus"`},
		{"daemon config it cannot run", []string{"daemon", "--config", nothingToDo}, 2, "nothing to do: logs is empty, the guard (guard.enabled) and the policy service (policy.enabled) are off"},
		// ban --for is checked before the daemon is asked, with the
		// config's duration syntax and its maximum.
		{"ban for above maximum", []string{"ban", "--socket", filepath.Join(dir, "none.sock"), "203.0.113.8", "--for", "213504d"}, 2,
			`--for: duration "213504d" is too long (at most 106751d)`},
		{"ban for far above maximum", []string{"ban", "--socket", filepath.Join(dir, "none.sock"), "203.0.113.8", "--for", "1000000d"}, 2,
			`--for: duration "1000000d" is too long (at most 106751d)`},
		{"ban for zero", []string{"ban", "--socket", filepath.Join(dir, "none.sock"), "203.0.113.8", "--for", "0"}, 2, `must be positive`},
		{"ban for negative", []string{"ban", "--socket", filepath.Join(dir, "none.sock"), "203.0.113.8", "--for", "-2h"}, 2, `negative duration "-2h"`},
		{"ban for bare number", []string{"ban", "--socket", filepath.Join(dir, "none.sock"), "203.0.113.8", "--for", "10"}, 2, `invalid duration "10"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, "", tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d stderr %q; want %d containing %q", code, stderr, tc.code, tc.stderr)
			}
		})
	}
}

// The events contract: one JSON object per recognised line, snake_case,
// empty fields omitted, abuse always present. Pinned by a golden file.
func TestEventsGolden(t *testing.T) {
	code, out, stderr := runCmd(t, "", "events", "--tz", "UTC", "../../testdata/report/edge.log")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden := "../../testdata/events/edge.golden.jsonl"
	os.WriteFile(golden+".got", []byte(out), 0o644)
	if *update {
		os.WriteFile(golden, []byte(out), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != out {
		t.Errorf("events output differs from %s (see .got)", golden)
	}
	// every line is an object with the contract's field names only
	allowed := map[string]bool{"time": true, "host": true, "service": true, "pid": true, "queue_id": true, "kind": true,
		"stage": true, "ip": true, "client_name": true, "port": true, "helo": true, "from": true, "to": true, "code": true,
		"dsn": true, "reason": true, "detail": true, "count": true, "abuse": true}
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		if _, ok := m["abuse"]; !ok {
			t.Errorf("line %d has no abuse field", n+1)
		}
		for k, v := range m {
			if !allowed[k] {
				t.Errorf("line %d: unexpected field %q", n+1, k)
			}
			if v == "" || v == float64(0) {
				t.Errorf("line %d: empty field %q not omitted", n+1, k)
			}
		}
		n++
	}
	if n < 30 {
		t.Errorf("only %d events", n)
	}
}

// stdin, "-", gzip by magic and the order of rotated files.
func TestReportInputs(t *testing.T) {
	src, err := os.ReadFile("../../testdata/report/edge.log")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(src)
	zw.Close()
	gz := filepath.Join(dir, "mail.log.2.gz")
	os.WriteFile(gz, z.Bytes(), 0o644)
	plain := filepath.Join(dir, "mail.log")
	os.WriteFile(plain, src, 0o644)

	summary := func(args ...string) map[string]any {
		t.Helper()
		code, out, stderr := runCmd(t, string(src), append([]string{"report", "--format", "json", "--tz", "UTC"}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var r struct{ Summary map[string]any }
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		return r.Summary
	}
	one := summary(plain)
	if got := summary(); got["lines"] != one["lines"] || got["rejected"] != one["rejected"] {
		t.Errorf("stdin %v != file %v", got, one)
	}
	if got := summary("-"); got["lines"] != one["lines"] {
		t.Errorf("- %v != file %v", got, one)
	}
	both := summary(gz, plain)
	if both["lines"].(float64) != 2*one["lines"].(float64) || both["rejected"].(float64) != 2*one["rejected"].(float64) {
		t.Errorf("gz+plain %v, want twice %v", both, one)
	}

	// A corrupt .gz: exit 1 naming the file, after printing what was read.
	bad := filepath.Join(dir, "mail.log.3.gz")
	os.WriteFile(bad, z.Bytes()[:z.Len()-12], 0o644)
	code, out, stderr := runCmd(t, "", "report", "--format", "json", plain, bad)
	if code != 1 || !strings.Contains(stderr, bad) || !strings.Contains(out, `"summary"`) {
		t.Errorf("corrupt gz: exit %d stderr %q", code, stderr)
	}
	// A small --capacity makes the sections approximate and says so.
	code, out, stderr = runCmd(t, "", "report", "--format", "json", "--top", "2", "--capacity", "2", plain)
	var approx struct{ Approximate []report.Approximation }
	if err := json.Unmarshal([]byte(out), &approx); code != 0 || err != nil || len(approx.Approximate) == 0 ||
		approx.Approximate[0].Capacity != 2 || approx.Approximate[0].MaxUndercount < 1 {
		t.Errorf("--capacity 2: exit %d %v %s, approximate %+v", code, err, stderr, approx.Approximate)
	}
	// Flags after the files work too.
	code, out, _ = runCmd(t, "", "report", plain, "--format", "csv", "--top", "3")
	if code != 0 || !strings.HasPrefix(out, "section,metric,value\n") {
		t.Errorf("csv: exit %d %q", code, out[:min(len(out), 80)])
	}
}
