package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// labAsJournalJSON renders testdata/lab/mail.log as `journalctl -o json`
// would print it had Postfix logged to the journal (stamps of 2025, UTC),
// with a non-Postfix entry and a blank line between.
func labAsJournalJSON(t *testing.T) (plain, jsonl string) {
	t.Helper()
	f, err := os.Open("../../testdata/lab/mail.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+) ([^\[:]+)\[(\d+)\]: (.*)$`)
	var p, j strings.Builder
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		m := re.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ts, err := time.Parse("2006 Jan _2 15:04:05", "2025 "+m[1])
		if err != nil {
			t.Fatal(err)
		}
		p.WriteString(ts.Format(time.RFC3339) + " " + m[2] + " " + m[3] + "[" + m[4] + "]: " + m[5] + "\n")
		b, _ := json.Marshal(map[string]string{"__CURSOR": fmt.Sprintf("s=x;i=%d", i),
			"__REALTIME_TIMESTAMP": fmt.Sprint(ts.UnixMicro()), "_HOSTNAME": m[2],
			"SYSLOG_IDENTIFIER": m[3], "_PID": m[4], "MESSAGE": m[5]})
		j.Write(b)
		j.WriteString("\n")
		if i == 3 {
			j.WriteString(`{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1764118000000000","SYSLOG_IDENTIFIER":"CRON","MESSAGE":"noise"}` + "\n\n")
		}
	}
	return p.String(), j.String()
}

// report, events and replay read journalctl's JSON output as they read
// the log file it came from.
func TestJournalJSONInput(t *testing.T) {
	plain, jsonl := labAsJournalJSON(t)
	for _, cmd := range [][]string{
		{"report", "--format", "json", "--tz", "UTC"},
		{"events", "--tz", "UTC"},
		{"replay", "--format", "json", "--tz", "UTC", "-"},
	} {
		t.Run(cmd[0], func(t *testing.T) {
			code, want, stderr := runCmd(t, plain, cmd...)
			if code != 0 {
				t.Fatalf("plain: exit %d: %s", code, stderr)
			}
			code, got, stderr := runCmd(t, jsonl, cmd...)
			if code != 0 {
				t.Fatalf("json: exit %d: %s", code, stderr)
			}
			if cmd[0] == "report" { // the noise and the blank line are read and skipped too
				counts := regexp.MustCompile(`"(lines|skipped)": \d+`)
				want, got = counts.ReplaceAllString(want, ""), counts.ReplaceAllString(got, "")
			}
			if got != want {
				t.Errorf("JSON input gives\n%.2000s\nthe log file gives\n%.2000s", got, want)
			}
			if cmd[0] == "replay" && !strings.Contains(got, "203.0.113.31") {
				t.Errorf("replay bans no dictionary attacker: %.2000s", got)
			}
		})
	}
}

// --journal runs journalctl for the Postfix entries between --since and
// --until. The journalctl here is a stand-in on PATH that records its
// arguments and prints the lab capture as journal JSON (a real journal is
// tested in internal/journal): report, events and replay give what they
// give for the log file, and the time bounds reach journalctl as epochs.
func TestJournalFlag(t *testing.T) {
	plain, jsonl := labAsJournalJSON(t)
	dir := t.TempDir()
	data := dir + "/entries.json"
	if err := os.WriteFile(data, []byte(jsonl), 0o600); err != nil {
		t.Fatal(err)
	}
	argsFile := dir + "/args"
	script := "#!/bin/sh\necho \"$@\" >> " + argsFile + "\ncat " + data + "\n"
	if err := os.WriteFile(dir+"/journalctl", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, cmd := range [][]string{
		{"report", "--format", "json", "--tz", "UTC"},
		{"events", "--tz", "UTC"},
		{"replay", "--format", "json", "--tz", "UTC"},
	} {
		t.Run(cmd[0], func(t *testing.T) {
			in := []string{"-"}
			if cmd[0] != "replay" {
				in = nil
			}
			code, want, stderr := runCmd(t, plain, append(cmd, in...)...)
			if code != 0 {
				t.Fatalf("plain: exit %d: %s", code, stderr)
			}
			code, got, stderr := runCmd(t, "", append(cmd, "--journal", "--since", "2025-11-26 00:00:00", "--until", "2025-11-27")...)
			if code != 0 {
				t.Fatalf("--journal: exit %d: %s", code, stderr)
			}
			if cmd[0] == "report" {
				counts := regexp.MustCompile(`"(lines|skipped)": \d+|"(since|until)": "[^"]*",?`)
				want, got = counts.ReplaceAllString(want, ""), counts.ReplaceAllString(got, "")
			}
			if got != want {
				t.Errorf("--journal gives\n%.1500s\nthe log file gives\n%.1500s", got, want)
			}
		})
	}
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2025, 11, 26, 0, 0, 0, 0, time.UTC).Unix()
	until := time.Date(2025, 11, 27, 0, 0, 0, 0, time.UTC).Unix() - 1
	for _, line := range strings.Split(strings.TrimSpace(string(args)), "\n") {
		for _, want := range []string{"--output=json", fmt.Sprintf("--since=@%d.000000", since), fmt.Sprintf("--until=@%d.999999", until)} {
			if !strings.Contains(line, want) {
				t.Errorf("journalctl %s: %s missing", line, want)
			}
		}
	}
	if code, _, stderr := runCmd(t, "", "report", "--journal", "x.log"); code != 2 {
		t.Errorf("--journal with a FILE: exit %d, %s", code, stderr)
	}
	if code, _, stderr := runCmd(t, "", "replay", "--since", "1h", "-"); code != 2 {
		t.Errorf("replay --since without --journal: exit %d, %s", code, stderr)
	}
}
