package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/detectors"
)

// dictLines returns n unknown-recipient rejects from ip, one second apart
// from start (BSD stamps).
func dictLines(ip string, start time.Time, n int) []string {
	var out []string
	for i := range n {
		t := start.Add(time.Duration(i) * time.Second)
		out = append(out, fmt.Sprintf("%s mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <u%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<u%d@example.com> proto=ESMTP helo=<friend>",
			t.Format(time.Stamp), ip, i, i))
	}
	return out
}

func writeLog(t *testing.T, lines []string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mail.log")
	content := strings.Join(lines, "\n") + "\nnot a syslog line\nNov 25 10:49:00 mx1 postfix/qmgr[1]: something else\n" +
		"Nov 25 10:49:01 mx1 postfix/master[1]: warning: process /usr/lib/postfix/sbin/smtpd pid 8965 exit status 1\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// Anchor the year: the file's mtime is "now" for the parser.
	mt := time.Date(2025, 11, 26, 0, 0, 0, 0, time.UTC)
	os.Chtimes(p, mt, mt)
	return p
}

func TestReplay(t *testing.T) {
	start := time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)
	var lines []string
	lines = append(lines, dictLines("203.0.113.5", start, 5)...)                     // ban
	lines = append(lines, dictLines("203.0.113.6", start, 4)...)                     // below threshold
	lines = append(lines, dictLines("192.0.2.9", start, 5)...)                       // allowlisted
	lines = append(lines, dictLines("203.0.113.5", start.Add(20*time.Minute), 5)...) // extends the 1h ban
	lines = append(lines, dictLines("203.0.113.5", start.Add(3*time.Hour), 5)...)    // second offence: 2h
	p := writeLog(t, lines)

	res, err := Replay(context.Background(), []string{p}, ReplayOptions{
		Detectors: detectors.DefaultConfig(), Allowlist: []string{"192.0.2.0/24"},
		Ban: ban.DefaultConfig(), Loc: time.UTC,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Bans) != 2 {
		t.Fatalf("bans = %+v, want 2", res.Bans)
	}
	b0, b1 := res.Bans[0], res.Bans[1]
	// The extension adds its evidence and lines, as in the daemon.
	if b0.IP.String() != "203.0.113.5/32" || b0.Detector != "dictionary" || b0.Offence != 1 || b0.Evidence != 10 {
		t.Errorf("first ban %+v", b0)
	}
	if len(b0.Lines) != 5 || !strings.HasPrefix(b0.Lines[0], "Nov 25 10:20:00 ") {
		t.Errorf("first ban keeps lines %q, want the extension's five", b0.Lines)
	}
	if want := start.Add(20*time.Minute + 4*time.Second + time.Hour); !b0.Until.Equal(want) {
		t.Errorf("first ban until %v, want %v (extended)", b0.Until, want)
	}
	if b1.Offence != 2 || b1.Until.Sub(b1.Time) != 2*time.Hour {
		t.Errorf("second ban %+v, want offence 2 for 2h", b1)
	}
	var dict DetectorSummary
	for _, s := range res.Summary {
		if s.Detector == "dictionary" {
			dict = s
		}
	}
	if dict.Decisions != 4 || dict.Bans != 2 || dict.Extended != 1 || dict.Refused != 1 {
		t.Errorf("summary %+v", dict)
	}
	st := res.Stats
	if st.Lines != uint64(len(lines)+3) || st.NotPostfix != 1 || st.Unrecognized != 1 || st.Context != 1 || st.Skipped() != 3 ||
		st.Kinds["reject"] != uint64(len(lines)) {
		t.Errorf("stats %+v", st)
	}
}

func TestReplayMissingFile(t *testing.T) {
	_, err := Replay(context.Background(), []string{"/nonexistent/mail.log"}, ReplayOptions{Detectors: detectors.DefaultConfig()})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/mail.log") {
		t.Errorf("got %v", err)
	}
}
