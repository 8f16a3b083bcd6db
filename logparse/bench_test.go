package logparse

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/loggen"
)

// benchLines is a mix of the lines a busy MX logs: mostly context and
// delivery lines, some rejects, lines of other programs.
func benchLines(tb testing.TB) []string {
	f, err := os.Open("../testdata/lab/mail.log")
	if err == nil {
		defer f.Close()
		var lines []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<16), MaxLineLength)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if len(lines) > 100 {
			return lines
		}
	}
	return []string{
		"Nov 25 10:49:00 mx1 postfix/smtpd[8965]: connect from mail.example.net[198.51.100.7]",
		"Nov 25 10:49:00 mx1 postfix/smtpd[8965]: 4F2A31C0B2: client=mail.example.net[198.51.100.7]",
		"Nov 25 10:49:00 mx1 postfix/cleanup[3]: 4F2A31C0B2: message-id=<x@y>",
		"Nov 25 10:49:00 mx1 postfix/qmgr[2]: 4F2A31C0B2: from=<a@a.example>, size=1234, nrcpt=1 (queue active)",
		"Nov 25 10:49:00 mx1 postfix/local[3]: 4F2A31C0B2: to=<u@example.com>, relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)",
		"Nov 25 10:49:00 mx1 postfix/qmgr[2]: 4F2A31C0B2: removed",
		"Nov 25 10:49:00 mx1 postfix/smtpd[8965]: disconnect from mail.example.net[198.51.100.7] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
		"Nov 25 10:49:00 mx1 postfix/smtpd[8965]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 550 5.1.1 <nouser@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<spam@foo.example> to=<nouser@example.com> proto=ESMTP helo=<friend>",
		"Nov 25 10:49:00 mx1 postfix/postscreen[11]: PREGREET 11 after 0.13 from [203.0.113.21]:4321: EHLO ylmf-pc\\r\\n",
		"Nov 25 10:49:00 mx1 dovecot: imap-login: Login: user=<u>, method=PLAIN, rip=198.51.100.8",
	}
}

// BenchmarkParse measures classification alone, one core: report lines/s
// as 1e9 / ns/op.
func BenchmarkParse(b *testing.B) {
	lines := benchLines(b)
	p := NewParser(time.UTC, refTime)
	var ev event.Event
	var bytes int64
	for _, l := range lines {
		bytes += int64(len(l) + 1)
	}
	b.SetBytes(bytes / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.ParseInto(lines[i%len(lines)], &ev)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkParseGenerated classifies the generator's realistic mix
// (internal/loggen: ~15% evidence, IPv4+IPv6, postscreen, delivery, other
// programs), the same kind of log the side-by-side script uses.
func BenchmarkParseGenerated(b *testing.B) {
	var buf strings.Builder
	if _, err := loggen.Generate(&buf, loggen.Config{Lines: 200000, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	p := NewParser(time.UTC, time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC))
	var ev event.Event
	b.SetBytes(int64(buf.Len() / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.ParseInto(lines[i%len(lines)], &ev)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
