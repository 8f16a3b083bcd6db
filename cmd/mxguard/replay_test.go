package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// emptyConfig returns a config file with no keys (built-in defaults), so
// that tests never read /etc/mxguard/mxguard.yaml.
func emptyConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mxguard.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type replayBan struct {
	IP       string    `json:"ip"`
	Detector string    `json:"detector"`
	Reason   string    `json:"reason"`
	Evidence int       `json:"evidence"`
	Time     time.Time `json:"time"`
}

func parseReplayJSON(t *testing.T, out string) []replayBan {
	t.Helper()
	var bans []replayBan
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var b replayBan
		if err := json.Unmarshal([]byte(line), &b); err != nil {
			t.Fatalf("replay line %q: %v", line, err)
		}
		for _, k := range []string{`"ip":`, `"detector":`, `"reason":`, `"evidence":`, `"time":`} {
			if !strings.Contains(line, k) {
				t.Errorf("replay line lacks %s: %s", k, line)
			}
		}
		bans = append(bans, b)
	}
	return bans
}

func TestReplayCommand(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "mail.log")
	var lines []string
	for i := range 5 {
		lines = append(lines, dictLine("203.0.113.45", i))
	}
	for i := range 4 {
		lines = append(lines, dictLine("203.0.113.46", i))
	}
	os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	cfg := emptyConfig(t, "")

	code, out, errOut := runCmd(t, "", "replay", "--config", cfg, "--format", "json", "--tz", "UTC", log)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	bans := parseReplayJSON(t, out)
	if len(bans) != 1 || bans[0].IP != "203.0.113.45/32" || bans[0].Detector != "dictionary" || bans[0].Evidence != 5 {
		t.Errorf("bans = %+v", bans)
	}
	code, out, _ = runCmd(t, "", "replay", "--config", cfg, "--tz", "UTC", log)
	if code != 0 || !strings.Contains(out, "203.0.113.45/32") || !strings.Contains(out, "DETECTOR") || !strings.Contains(out, "9 lines, 9 events, 0 skipped; 1 ban") {
		t.Errorf("table (exit %d):\n%s", code, out)
	}
	// stdin, and a higher threshold from the config.
	code, out, _ = runCmd(t, strings.Join(lines, "\n"), "replay", "--format", "json", "--config",
		emptyConfig(t, "detectors:\n  dictionary: {threshold: 6}\n"), "-")
	if code != 0 || strings.TrimSpace(out) != "" {
		t.Errorf("threshold 6: exit %d, %q", code, out)
	}
	// Errors: missing file (1), bad config (2), bad format (2).
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"replay", "--config", cfg, filepath.Join(dir, "nope.log")}, 1, "nope.log"},
		{[]string{"replay", "--config", emptyConfig(t, "detectors: {dictionary: {bogus: 1}}\n"), log}, 2, `unknown key "bogus" in detectors.dictionary`},
		{[]string{"replay", "--config", cfg, "--format", "csv", log}, 2, "--format"},
	} {
		code, _, errOut := runCmd(t, "", tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.err) {
			t.Errorf("%v: exit %d %q, want %d %q", tc.args, code, errOut, tc.code, tc.err)
		}
	}
}

// TestReplayLab replays the logs of the real-Postfix lab (testdata/lab and
// testdata/lab-classes, made by testdata/postfix-lab/run.sh): every bad
// client with expectations must be banned (its address or a prefix holding
// it) by one of the detectors the lab expects, no good client ever, and the
// output must be the same twice and match its golden file.
func TestReplayLab(t *testing.T) {
	for _, lab := range []string{"lab", "lab-classes"} {
		t.Run(lab, func(t *testing.T) { replayLab(t, lab) })
	}
}

func replayLab(t *testing.T, lab string) {
	dir := filepath.Join("..", "..", "testdata", lab)
	logPath := filepath.Join(dir, "mail.log")
	clientsPath := filepath.Join(dir, "clients.json")
	b, err := os.ReadFile(clientsPath)
	if err != nil {
		t.Skipf("no lab clients (%v): run testdata/postfix-lab/run.sh", err)
	}
	if _, err := os.Stat(logPath); err != nil {
		t.Skipf("no lab log: %v", err)
	}
	var clients []struct {
		IP     string   `json:"ip"`
		Role   string   `json:"role"`
		Did    string   `json:"did"`
		Expect []string `json:"expect"`
	}
	if err := json.Unmarshal(b, &clients); err != nil {
		t.Fatalf("%s: %v", clientsPath, err)
	}
	cfg := emptyConfig(t, "")
	code, out, errOut := runCmd(t, "", "replay", "--config", cfg, "--format", "json", "--tz", "UTC", logPath)
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	_, out2, _ := runCmd(t, "", "replay", "--config", cfg, "--format", "json", "--tz", "UTC", logPath)
	if out != out2 {
		t.Error("replay is not deterministic")
	}
	bans := parseReplayJSON(t, out)
	// detectorsFor lists the detectors of every ban whose prefix holds ip.
	detectorsFor := func(ip string) []string {
		a := netip.MustParseAddr(ip)
		var ds []string
		for _, b := range bans {
			p, err := netip.ParsePrefix(b.IP)
			if err != nil {
				addr, aerr := netip.ParseAddr(b.IP)
				if aerr != nil {
					t.Fatalf("replay ip %q: %v", b.IP, err)
				}
				p = netip.PrefixFrom(addr, addr.BitLen())
			}
			if p.Contains(a) {
				ds = append(ds, b.Detector)
			}
		}
		return ds
	}
	nBad := 0
	for _, c := range clients {
		got := detectorsFor(c.IP)
		switch c.Role {
		case "good":
			if len(got) > 0 {
				t.Errorf("good client %s banned by %v (it did: %s)", c.IP, got, c.Did)
			}
		case "bad":
			if len(c.Expect) == 0 {
				continue
			}
			nBad++
			ok := false
			for _, d := range got {
				ok = ok || slices.Contains(c.Expect, d)
			}
			if !ok {
				t.Errorf("bad client %s: banned by %v, want one of %v (it did: %s)", c.IP, got, c.Expect, c.Did)
			}
		}
	}
	if nBad == 0 {
		t.Error("clients.json lists no bad client with expected detectors")
	}
	// The exact bans are pinned too (go test ./cmd/mxguard -update).
	golden := filepath.Join("..", "..", "testdata", "replay", lab+".golden.jsonl")
	os.WriteFile(golden+".got", []byte(out), 0o644)
	if *update {
		os.WriteFile(golden, []byte(out), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/mxguard -run TestReplayLab -update)", err)
	}
	if string(want) != out {
		t.Errorf("replay of %s differs from %s (see .got)", logPath, golden)
	}
}

func TestConfigCheck(t *testing.T) {
	code, out, errOut := runCmd(t, "", "config", "check", "--config", filepath.Join("..", "..", "etc", "mxguard.example.yaml"))
	if code != 0 || !strings.Contains(out, "# effective configuration from") || !strings.Contains(out, "control_socket: /run/mxguard/control.sock") {
		t.Errorf("example: exit %d, %s\n%s", code, errOut, out)
	}
	bad := emptyConfig(t, "logs: [/var/log/mail.log]\n\ndetectors:\n  dictionary:\n    bogus: 1\n")
	code, out, errOut = runCmd(t, "", "config", "check", "--config", bad)
	want := "config " + bad + `: line 5: unknown key "bogus" in detectors.dictionary`
	if code != 2 || out != "" || !strings.Contains(errOut, want) {
		t.Errorf("bad: exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, want)
	}
	code, _, errOut = runCmd(t, "", "config", "check", "--config", emptyConfig(t, "log_level: loud\ntail: {checkpoint_interval: 0s}\n"))
	if code != 2 || !strings.Contains(errOut, `log_level: "loud"`) || !strings.Contains(errOut, "tail.checkpoint_interval") {
		t.Errorf("values: exit %d, %q", code, errOut)
	}
	// The guard section is printed with its effective defaults, not as
	// written; its keys are checked as strictly as the others.
	stateDir := t.TempDir()
	code, out, errOut = runCmd(t, "", "config", "check", "--config",
		emptyConfig(t, "state_dir: "+stateDir+"\nguard:\n  listen: 127.0.0.1:2525\n  greylist: {enabled: true}\n"))
	for _, want := range []string{
		"\nguard:\n", "  listen: 127.0.0.1:2525\n", "  upstream: 127.0.0.1:10025\n", "  handoff: xclient\n",
		"  greet_pause: 1s\n", "    max_connections: 2000\n", "    connection_rate_window: 1m\n",
		"    helo_required: reject\n", "    delay: 5m\n", "    db: " + filepath.Join(stateDir, "greylist.db") + "\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("guard defaults: exit %d %s, output lacks %q:\n%s", code, errOut, want, out)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"guard:\n  limits:\n    max_conections: 5\n", `line 3: unknown key "max_conections" in guard.limits (did you mean "max_connections"?)`},
		{"guard:\n  greet_pause: 10\n", `line 2: invalid duration "10"`},
		{"guard:\n  checks: {relay: maybe}\n", `guard.checks.relay: want reject, warn or off, got "maybe"`},
	} {
		f := emptyConfig(t, tc.yaml)
		code, out, errOut := runCmd(t, "", "config", "check", "--config", f)
		if code != 2 || out != "" || !strings.Contains(errOut, "config "+f+": ") || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.yaml, code, out, errOut, tc.want)
		}
	}
	if code, _, _ := runCmd(t, "", "config", "frobnicate"); code != 2 {
		t.Errorf("config frobnicate: exit %d", code)
	}
}

// Without --tz, replay reads stamps without a zone in the config's
// tail.tz, as the daemon does; --tz overrides it.
func TestReplayTZFromConfig(t *testing.T) {
	const zone = "Pacific/Kiritimati" // UTC+14: never mistaken for Local or UTC
	if _, err := time.LoadLocation(zone); err != nil {
		t.Skipf("no zone data: %v", err)
	}
	if _, off := time.Now().Zone(); off == 14*3600 {
		t.Skip("Local is UTC+14: cannot tell tail.tz from Local")
	}
	log := filepath.Join(t.TempDir(), "mail.log")
	var lines []string
	for i := range 5 {
		lines = append(lines, dictLine("203.0.113.45", i))
	}
	os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	banTime := func(args ...string) time.Time {
		t.Helper()
		code, out, errOut := runCmd(t, "", append([]string{"replay", "--format", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		bans := parseReplayJSON(t, out)
		if len(bans) != 1 {
			t.Fatalf("%v: bans = %+v", args, bans)
		}
		return bans[0].Time
	}
	cfg := emptyConfig(t, "tail: {tz: "+zone+"}\n")
	want := banTime("--config", emptyConfig(t, ""), "--tz", zone, log)
	if got := banTime("--config", cfg, log); !got.Equal(want) {
		t.Errorf("without --tz: ban at %s, want %s (stamps read in tail.tz %s)", got, want, zone)
	}
	if got := banTime("--config", cfg, "--tz", "UTC", log); got.Equal(want) {
		t.Errorf("--tz UTC did not override tail.tz: ban at %s", got)
	}
}
