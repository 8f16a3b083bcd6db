package detectors

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/logparse"
)

// Log lines in the forms the real Postfix of testdata/lab/mail.log writes.
const (
	labSASLFail = "Nov 26 %s mx postfix/smtpd[19228]: warning: unknown[%s]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=%s@example.com"
	labAccepted = "Nov 26 %s mx postfix/smtpd[19228]: %X: client=unknown[%s]"
	labLogin    = "Nov 26 %s mx postfix/submission/smtpd[19208]: %X: client=unknown[%s], sasl_method=PLAIN, sasl_username=alice@example.com"
	labSender   = "Nov 26 %s mx postfix/smtpd[19202]: NOQUEUE: reject: RCPT from unknown[%s]: 504 5.5.2 <root>: Sender address rejected: need fully-qualified address; from=<root> to=<alice@example.com> proto=ESMTP helo=<mail.unq.example>"
)

// session writes log lines for one client, one step apart from 00:47:00:
// each byte of script is one line, f a failed AUTH of alice, u a failed
// AUTH of another user each time, a an accepted message (no AUTH), l a
// message after a successful AUTH of alice, s a sender reject.
func session(t *testing.T, client string, step time.Duration, script string) []event.Event {
	t.Helper()
	p := logparse.NewParser(time.UTC, time.Date(2025, 11, 27, 0, 0, 0, 0, time.UTC))
	at := time.Date(2025, 11, 26, 0, 47, 0, 0, time.UTC)
	users := []string{"admin", "alice", "bob", "info", "test", "postmaster"}
	var out []event.Event
	for i, c := range script {
		stamp := at.Add(time.Duration(i) * step).Format(time.TimeOnly)
		var line string
		switch c {
		case 'f':
			line = fmt.Sprintf(labSASLFail, stamp, client, "alice")
		case 'u':
			line = fmt.Sprintf(labSASLFail, stamp, client, users[i%len(users)])
		case 'a':
			line = fmt.Sprintf(labAccepted, stamp, 0x24FF0986793+i, client)
		case 'l':
			line = fmt.Sprintf(labLogin, stamp, 0x24FF0986793+i, client)
		case 's':
			line = fmt.Sprintf(labSender, stamp, client)
		default:
			t.Fatalf("script %q: unknown step %q", script, c)
		}
		ev, err := p.Parse(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

// TestForgiveness checks who may wipe or soften which counter: only a
// successful AUTH of the same client clears its SASL failures; accepted
// mail without AUTH removes at most one error at a time from error_burst,
// and no more than a bounded number per window.
func TestForgiveness(t *testing.T) {
	const guesser, sender = "203.0.113.49", "203.0.113.37"
	tests := []struct {
		name   string
		client string
		step   time.Duration
		script string
		want   []string
	}{
		// 20 failed AUTH, one message to postmaster@ after every four.
		{name: "sasl/accepted mail does not forgive guessing", client: guesser, step: 20 * time.Second,
			script: strings.Repeat("ffffa", 5),
			want:   []string{"5: sasl_bruteforce 203.0.113.49/32 n=5", "7: error_burst 203.0.113.49/32 n=6"}},
		{name: "sasl/one accepted message between failures", client: guesser, step: 20 * time.Second,
			script: "ffafffa",
			want:   []string{"5: sasl_bruteforce 203.0.113.49/32 n=5"}},
		{name: "sasl/login forgives", client: guesser, step: 20 * time.Second,
			script: "fffflffff"},
		{name: "sasl/wrong password then login", client: "192.0.2.15", step: time.Second,
			script: "flll"},
		// error_burst: 6 within 5m; an accepted message takes back one.
		{name: "errors/accepted mail softens by one", client: sender, step: 10 * time.Second,
			script: "sssssasssss",
			want:   []string{"7: error_burst 203.0.113.37/32 n=6"}},
		{name: "errors/one accepted after every four errors", client: sender, step: 10 * time.Second,
			script: strings.Repeat("ssssa", 4),
			want:   []string{"7: error_burst 203.0.113.37/32 n=6"}},
		{name: "errors/one accepted after every error", client: sender, step: 10 * time.Second,
			script: strings.Repeat("sa", 12),
			want:   []string{"16: error_burst 203.0.113.37/32 n=6"}},
		{name: "errors/many accepted messages forgive at most three", client: sender, step: 5 * time.Second,
			script: "sssss" + strings.Repeat("a", 9) + "ssss",
			want:   []string{"17: error_burst 203.0.113.37/32 n=6"}},
		{name: "errors/busy sender with a few errors", client: sender, step: 10 * time.Second,
			script: "saaaasaaaasaaaasaaaasaaaasaaaasaaaa"},
		{name: "errors/login forgives", client: sender, step: 10 * time.Second,
			script: "ssssslsssss"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, _ := run(t, DefaultConfig(), session(t, tc.client, tc.step, tc.script))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}
