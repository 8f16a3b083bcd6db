package logparse

import (
	"bufio"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// labClient is one entry of testdata/lab/clients.json: what a real client
// did against the lab's real Postfix.
type labClient struct {
	IP     string   `json:"ip"`
	Role   string   `json:"role"`
	Did    string   `json:"did"`
	Expect []string `json:"expect"`
}

func readLab(t *testing.T, dir string) ([]string, map[netip.Addr]labClient) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "clients.json"))
	if err != nil {
		t.Fatal(err)
	}
	var list []labClient
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	clients := map[netip.Addr]labClient{}
	for _, c := range list {
		clients[netip.MustParseAddr(c.IP)] = c
	}
	f, err := os.Open(filepath.Join(dir, "mail.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, clients
}

// evidenceRE is an independent, regexp-based idea of which lines are
// evidence against a client, and where its address is.
var evidenceRE = regexp.MustCompile(`(?:reject: \S+ from [^\[ ]*\[([^\]]+)\]|improper command pipelining after \S+ from [^\[ ]*\[([^\]]+)\]|too many errors after \S+ from [^\[ ]*\[([^\]]+)\]|warning: [^\[ ]*\[([^\]]+)\]: SASL \S+ authentication failed|warning: non-SMTP command from [^\[ ]*\[([^\]]+)\]|(?:PREGREET \d+ after \S+ from|HANGUP after \S+ from|COMMAND PIPELINING from|NON-SMTP COMMAND from|BARE NEWLINE from|COMMAND (?:TIME|COUNT|LENGTH) LIMIT from|DNSBL rank \d+ for|DENYLISTED|BLACKLISTED) \[([^\]]+)\])`)

// Every evidence line of the real-Postfix lab log gives an event with the
// right address and abuse set; the traffic of good clients gives none,
// but for the two honest mistakes the lab made on purpose.
func TestLabEvidence(t *testing.T) {
	checkLab(t, "../testdata/lab", time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC))
}

// TestLiveLab runs the lab again against this machine's Postfix (root,
// Debian's postfix, swaks, dovecot-core; ~40 s) and checks the fresh
// capture the same way, so a change in Postfix's wording is caught.
func TestLiveLab(t *testing.T) {
	switch {
	case testing.Short():
		t.Skip("live lab: skipped with -short")
	case os.Geteuid() != 0:
		t.Skip("live lab: needs root (it starts a Postfix instance)")
	case os.Getenv("MXGUARD_LIVE_LAB") == "0":
		t.Skip("live lab: MXGUARD_LIVE_LAB=0")
	}
	for _, bin := range []string{"postfix", "postmap", "swaks", "dovecot"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + bin); err2 != nil {
				t.Skipf("live lab: %s not installed (apt-get install postfix swaks dovecot-core)", bin)
			}
		}
	}
	out := t.TempDir()
	// Postfix's own users must reach the spool: t.TempDir() is 0700.
	work, err := os.MkdirTemp("", "mxguard-live-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("../testdata/postfix-lab/stop.sh", filepath.Join(work, "lab")).Run()
		os.RemoveAll(work)
	})
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../testdata/postfix-lab/run.sh", out)
	cmd.Env = append(os.Environ(), "LAB_DIR="+filepath.Join(work, "lab"), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run.sh: %v\n%s", err, b)
	}
	checkLab(t, out, time.Now().Add(time.Hour))
}

func checkLab(t *testing.T, dir string, ref time.Time) {
	t.Helper()
	lines, clients := readLab(t, dir)
	p := NewParser(time.UTC, ref)
	evidence := 0
	abuseByClient := map[netip.Addr]int{}
	for _, l := range lines {
		ev, err := p.Parse(l)
		m := evidenceRE.FindStringSubmatch(l)
		benign := strings.Contains(l, ": 450 4.3.2 ") // postscreen, after PASS NEW
		if m != nil && !benign {
			evidence++
			var addr string
			for _, g := range m[1:] {
				if g != "" {
					addr = g
				}
			}
			want := netip.MustParseAddr(addr)
			if err != nil || !ev.Abuse || ev.Client != want {
				t.Errorf("evidence line: err %v abuse %v client %v (want %v)\n%s", err, ev.Abuse, ev.Client, want, l)
			}
		}
		if err == nil && ev.Abuse {
			abuseByClient[ev.Client]++
		}
	}
	if evidence < 50 {
		t.Fatalf("only %d evidence lines: is the lab log complete?", evidence)
	}
	for addr, c := range clients {
		n := abuseByClient[addr]
		switch {
		case c.Role == "bad" && n == 0:
			t.Errorf("bad client %v (%s): no abuse events", addr, c.Did)
		case c.Role == "good":
			// the newsletter's one mistyped recipient; the user's one
			// mistyped password (its warning and the auth=0/1 in the
			// disconnect statistics)
			allowed := map[string]int{"192.0.2.14": 1, "192.0.2.15": 2}[addr.String()]
			if n != allowed {
				t.Errorf("good client %v (%s): %d abuse events, want %d", addr, c.Did, n, allowed)
			}
		}
	}
}
