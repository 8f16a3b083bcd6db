package loggen

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

func generate(t testing.TB, cfg Config) ([]byte, Stats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := Generate(&buf, cfg)
	if err != nil {
		t.Fatalf("Generate(%+v): %v", cfg, err)
	}
	return buf.Bytes(), st
}

func lines(b []byte) []string {
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func TestDeterministic(t *testing.T) {
	for _, f := range []Format{FormatBSD, FormatRFC3339, FormatMaillog} {
		t.Run(f.String(), func(t *testing.T) {
			a, sa := generate(t, Config{Lines: 10000, Seed: 7, Format: f})
			b, sb := generate(t, Config{Lines: 10000, Seed: 7, Format: f})
			sa.First, sa.Last, sb.First, sb.Last = sa.First.UTC(), sa.Last.UTC(), sb.First.UTC(), sb.Last.UTC()
			if sha256.Sum256(a) != sha256.Sum256(b) || sa != sb {
				t.Fatalf("same seed gave different output (%d vs %d bytes, stats %+v vs %+v)", len(a), len(b), sa, sb)
			}
			c, _ := generate(t, Config{Lines: 10000, Seed: 8, Format: f})
			if bytes.Equal(a, c) {
				t.Fatal("different seeds gave the same output")
			}
			// A prefix of a longer run is the shorter run.
			d, _ := generate(t, Config{Lines: 15000, Seed: 7, Format: f})
			if !bytes.HasPrefix(d, a) {
				t.Fatal("10000-line run is not a prefix of the 15000-line run")
			}
		})
	}
}

func TestLineCountAndStats(t *testing.T) {
	for _, n := range []int{1, 2, 17, 5000} {
		out, st := generate(t, Config{Lines: n, Seed: 1})
		if got := bytes.Count(out, []byte("\n")); got != n || st.Lines != n {
			t.Errorf("Lines=%d: wrote %d lines, Stats.Lines=%d", n, got, st.Lines)
		}
		if st.Bytes != int64(len(out)) {
			t.Errorf("Lines=%d: Stats.Bytes=%d, wrote %d", n, st.Bytes, len(out))
		}
	}
}

// evidencePatterns is an independent statement of IsEvidence's rule: lines
// that are evidence against a client.
var evidencePatterns = []string{
	"NOQUEUE: reject: ", "milter-reject: ", "improper command pipelining", "COMMAND PIPELINING",
	"too many errors after", "lost connection after AUTH", "authentication failed", "non-SMTP command",
	"PREGREET ", "DNSBL rank", "HANGUP after", "BARE NEWLINE", "COMMAND COUNT LIMIT", "DENYLISTED", "BLACKLISTED",
}

func isEvidence(l string) bool {
	if strings.Contains(l, " 450 4.3.2 Service currently unavailable") || strings.Contains(l, "Greylisted") {
		return false
	}
	for _, p := range evidencePatterns {
		if strings.Contains(l, p) {
			return true
		}
	}
	return false
}

func TestEvidenceProportion(t *testing.T) {
	for _, tc := range []struct {
		seed   uint64
		format Format
	}{{1, FormatBSD}, {2, FormatRFC3339}, {3, FormatMaillog}, {99, FormatBSD}} {
		out, st := generate(t, Config{Lines: 50000, Seed: tc.seed, Format: tc.format})
		n := 0
		for _, l := range lines(out) {
			if isEvidence(l) {
				n++
			}
		}
		if n != st.Evidence {
			t.Errorf("seed %d: text rule counts %d evidence lines, generator flagged %d", tc.seed, n, st.Evidence)
		}
		if r := float64(n) / float64(st.Lines); r < 0.10 || r > 0.25 {
			t.Errorf("seed %d %s: evidence share %.3f outside [0.10, 0.25]", tc.seed, tc.format, r)
		} else {
			t.Logf("seed %d %s: evidence %.1f%%", tc.seed, tc.format, 100*r)
		}
	}
}

// addrCandidates returns the bracketed tokens of l that look like addresses
// (not pids "[2411]" or kernel uptimes "[1104351.791439]") and the values of
// rip=, lip=, SRC= and DST=. It avoids regexps: this test runs under -race.
func addrCandidates(l string, out []string) []string {
	for i := 0; i < len(l); i++ {
		switch l[i] {
		case '[':
			j := strings.IndexByte(l[i:], ']')
			if j < 0 {
				return out
			}
			tok := l[i+1 : i+j]
			if strings.Count(tok, ".") == 3 || strings.Count(tok, ":") >= 2 {
				if strings.Trim(tok, "0123456789abcdefABCDEF:.") == "" {
					out = append(out, tok)
				}
			}
			i += j
		case '=':
			if i >= 3 {
				if k := l[i-3 : i]; k == "rip" || k == "lip" || k == "SRC" || k == "DST" {
					end := strings.IndexAny(l[i+1:], ", ")
					if end < 0 {
						end = len(l) - i - 1
					}
					out = append(out, l[i+1:i+1+end])
				}
			}
		}
	}
	return out
}

func TestAddrCandidates(t *testing.T) {
	got := addrCandidates("Nov 29 20:00:00 mx1 kernel: [1104351.791439] SRC=198.51.100.7 DST=192.0.2.1 x", nil)
	got = addrCandidates("postfix/smtpd[2411]: connect from a.example[2001:db8::1]", got)
	got = addrCandidates("dovecot[1]: Login: rip=203.0.113.9, lip=192.0.2.1, mpid=1", got)
	want := []string{"198.51.100.7", "192.0.2.1", "2001:db8::1", "203.0.113.9", "192.0.2.1"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("addrCandidates = %q, want %q", got, want)
	}
}

func TestAddressesValid(t *testing.T) {
	out, _ := generate(t, Config{Lines: 60000, Seed: 3})
	checked, v6, connects := 0, 0, 0
	repeat := map[string]int{}
	doc6 := netip.MustParsePrefix("2001:db8::/32")
	var cands []string
	for _, l := range lines(out) {
		cands = addrCandidates(l, cands[:0])
		for _, s := range cands {
			a, err := netip.ParseAddr(s)
			if err != nil {
				t.Fatalf("invalid address %q in %q", s, l)
			}
			if a.String() != s {
				t.Fatalf("address %q is not in canonical form (%s) in %q", s, a, l)
			}
			if !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() {
				t.Fatalf("address %s is not public-looking in %q", a, l)
			}
			if a.Is6() && !doc6.Contains(a) {
				t.Fatalf("IPv6 address %s outside 2001:db8::/32 in %q", a, l)
			}
			checked++
		}
		if i := strings.Index(l, "smtpd["); i >= 0 {
			if j := strings.Index(l[i:], "]: connect from "); j >= 0 && len(cands) > 0 {
				ip := cands[len(cands)-1]
				connects++
				repeat[ip]++
				if strings.Contains(ip, ":") {
					v6++
				}
			}
		}
	}
	if checked < 30000 {
		t.Errorf("only %d addresses checked", checked)
	}
	if r := float64(v6) / float64(connects); r < 0.05 || r > 0.15 {
		t.Errorf("IPv6 share of %d smtpd connects %.3f, want about 0.10", connects, r)
	}
	many := 0
	for _, n := range repeat {
		if n >= 10 {
			many++
		}
	}
	if many < 20 {
		t.Errorf("only %d clients connect 10 times or more; want repeat offenders and regular senders", many)
	}
}

var stampRE = map[Format]*regexp.Regexp{
	FormatBSD:     regexp.MustCompile(`^(?:Nov|Dec|Jan) [ 123]\d \d\d:\d\d:\d\d mx1 \S+: \S`),
	FormatMaillog: regexp.MustCompile(`^(?:Nov|Dec|Jan) [0123]\d \d\d:\d\d:\d\d mx1 postfix/[a-z/]+\[\d+\]: \S`),
	FormatRFC3339: regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d mx1 \S+: \S`),
}

func parseStamp(t *testing.T, f Format, l string, year int) time.Time {
	t.Helper()
	var ts time.Time
	var err error
	switch f {
	case FormatRFC3339:
		ts, err = time.Parse(time.RFC3339Nano, l[:strings.IndexByte(l, ' ')])
	case FormatBSD:
		ts, err = time.Parse("Jan _2 15:04:05", l[:15])
	default:
		ts, err = time.Parse("Jan 02 15:04:05", l[:15])
	}
	if err != nil {
		t.Fatalf("bad stamp in %q: %v", l, err)
	}
	if f != FormatRFC3339 {
		if ts.Month() == time.January {
			year++
		}
		ts = ts.AddDate(year, 0, 0)
	}
	return ts
}

func TestFormatsAndMonotonicTime(t *testing.T) {
	// Start near the end of a single-digit day and of the year, so that
	// the stamps cross "Dec  5" / "Dec 05" style days and months.
	start := time.Date(2025, time.December, 31, 23, 58, 0, 0, time.FixedZone("CET", 3600))
	for _, f := range []Format{FormatBSD, FormatRFC3339, FormatMaillog} {
		t.Run(f.String(), func(t *testing.T) {
			out, st := generate(t, Config{Lines: 15000, Seed: 5, Format: f, Start: start})
			var prev time.Time
			days := map[string]bool{}
			for i, l := range lines(out) {
				if !stampRE[f].MatchString(l) {
					t.Fatalf("line %d does not match the %s format: %q", i, f, l)
				}
				ts := parseStamp(t, f, l, 2025)
				if ts.Before(prev) {
					t.Fatalf("line %d goes back in time (%s < %s): %q", i, ts, prev, l)
				}
				prev = ts
				days[l[:6]] = true
			}
			if !st.Last.After(start.Add(time.Hour)) {
				t.Errorf("15000 lines cover only %s", st.Last.Sub(start))
			}
			if f == FormatBSD && !days["Jan  1"] {
				t.Errorf("no line with a space-padded day 'Jan  1'; days seen %v", days)
			}
			if f == FormatMaillog && !days["Jan 01"] {
				t.Errorf("no line with a zero-padded day 'Jan 01'; days seen %v", days)
			}
		})
	}
}

func TestLineFamilies(t *testing.T) {
	out, st := generate(t, Config{Lines: 200000, Seed: 1})
	text := string(out)
	// family substring -> minimal share of lines (per mille, rounded down)
	for _, tc := range []struct {
		sub      string
		minCount int
	}{
		{"postfix/smtpd[", 40000}, {"postfix/postscreen[", 20000}, {"postfix/submission/smtpd[", 5000},
		{": connect from ", 15000}, {": disconnect from ", 15000}, {"CONNECT from [", 15000},
		{"PASS OLD [", 5000}, {"PASS NEW [", 1000}, {"WHITELISTED [", 100}, {"ALLOWLISTED [", 20},
		{": client=", 8000}, {", sasl_username=", 2000}, {": message-id=<", 8000}, {" (queue active)", 8000},
		{"status=sent", 8000}, {"status=deferred", 50}, {"status=bounced", 20}, {": removed", 8000},
		{"User unknown in virtual mailbox table", 2000}, {"Relay access denied", 500},
		{"Helo command rejected: need fully-qualified hostname", 200}, {"Sender address rejected: Domain not found", 50},
		{"Sender address rejected: need fully-qualified address", 50}, {"Client host rejected: cannot find your hostname", 200},
		{"blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/", 100},
		{"improper command pipelining after ", 100}, {"too many errors after RCPT", 100},
		{"lost connection after AUTH", 300}, {"timeout after ", 50}, {"SASL LOGIN authentication failed: UGFzc3dvcmQ6", 300},
		{"authentication failed: authentication failure, sasl_username=", 300}, {"warning: non-SMTP command from", 50},
		{"does not resolve to address", 500}, {"PREGREET ", 300}, {"HANGUP after ", 200}, {"COMMAND PIPELINING from", 50},
		{"DNSBL rank ", 1000}, {"blocked using zen.spamhaus.org; from=<", 200}, {"DISCONNECT [", 5000},
		{"450 4.3.2 Service currently unavailable", 200}, {"dovecot[", 500}, {"CRON[", 50}, {"kernel: [", 50},
	} {
		if n := strings.Count(text, tc.sub); n < tc.minCount {
			t.Errorf("%q occurs %d times in %d lines, want >= %d", tc.sub, n, st.Lines, tc.minCount)
		}
	}
}

// TestSessionsConsistent checks that an smtpd process serves one session at
// a time (connect and disconnect alternate per pid) and that every queue id
// that is removed was seen before.
func TestSessionsConsistent(t *testing.T) {
	out, _ := generate(t, Config{Lines: 50000, Seed: 11})
	pidRE := regexp.MustCompile(`(postfix/(?:submission/)?smtpd\[\d+\]): (connect|disconnect) from `)
	qidRE := regexp.MustCompile(`\]: ([0-9A-Za-z]{10,16}): (client=|uid=0|message-id=|from=|removed)`)
	open := map[string]bool{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if m := pidRE.FindStringSubmatch(l); m != nil {
			if (m[2] == "connect") == open[m[1]] {
				t.Fatalf("%s: %s while a session is %v: %q", m[1], m[2], map[bool]string{true: "open", false: "closed"}[open[m[1]]], l)
			}
			open[m[1]] = m[2] == "connect"
		}
		if m := qidRE.FindStringSubmatch(l); m != nil {
			if m[2] == "removed" && !seen[m[1]] {
				t.Fatalf("queue id %s removed before it was created: %q", m[1], l)
			}
			seen[m[1]] = true
		}
	}
	if len(seen) < 1000 {
		t.Errorf("only %d queue ids", len(seen))
	}
}

func TestMaillogOnlyPostfix(t *testing.T) {
	out, st := generate(t, Config{Lines: 20000, Seed: 2, Format: FormatMaillog})
	if st.Postfix != st.Lines {
		t.Errorf("maillog: %d of %d lines are postfix lines", st.Postfix, st.Lines)
	}
	for _, l := range lines(out) {
		if !strings.Contains(l[:40], " postfix/") {
			t.Fatalf("non-postfix line in maillog format: %q", l)
		}
	}
}

func TestQueueIDStyles(t *testing.T) {
	short := regexp.MustCompile(`^[0-9A-F]{10,12}$`)
	long := regexp.MustCompile(`^[0-9B-DF-HJ-NP-TV-Yb-df-hj-np-tv-y]{10}z[0-9B-DF-HJ-NP-TV-Yb-df-hj-np-tv-y]{3,5}$`)
	re := regexp.MustCompile(`\]: ([0-9A-Za-z]+): client=`)
	for _, tc := range []struct {
		style           QueueIDStyle
		wantShort, long bool
	}{{QueueIDShort, true, false}, {QueueIDLong, false, true}, {QueueIDMixed, true, true}} {
		out, _ := generate(t, Config{Lines: 20000, Seed: 4, QueueIDs: tc.style})
		var ns, nl int
		for _, m := range re.FindAllStringSubmatch(string(out), -1) {
			switch {
			case short.MatchString(m[1]):
				ns++
			case long.MatchString(m[1]):
				nl++
			default:
				t.Fatalf("style %d: malformed queue id %q", tc.style, m[1])
			}
		}
		if (ns > 0) != tc.wantShort || (nl > 0) != tc.long {
			t.Errorf("style %d: %d short and %d long ids", tc.style, ns, nl)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{{Lines: 0}, {Lines: -1}, {Lines: 1, Format: 9}, {Lines: 1, Host: "a b"}} {
		if _, err := Generate(io.Discard, cfg); err == nil {
			t.Errorf("Generate(%+v): no error", cfg)
		}
	}
	for _, s := range []string{"bsd", "rfc3339", "maillog"} {
		f, err := ParseFormat(s)
		if err != nil || f.String() != s {
			t.Errorf("ParseFormat(%q) = %v, %v", s, f, err)
		}
	}
	if _, err := ParseFormat("json"); err == nil {
		t.Error("ParseFormat(json): no error")
	}
}

func TestSecs(t *testing.T) {
	for _, tc := range []struct {
		ms   int
		want string
	}{{0, "0"}, {9, "0"}, {10, "0.01"}, {70, "0.07"}, {350, "0.35"}, {999, "0.99"}, {1000, "1"}, {1234, "1.2"}, {9999, "9.9"}, {31000, "31"}} {
		var s session
		if got := string(s.secs(tc.ms).buf); got != tc.want {
			t.Errorf("secs(%d) = %q, want %q", tc.ms, got, tc.want)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	const n = 100000
	b.SetBytes(n) // "bytes" here are lines: MB/s reads as million lines/s
	for b.Loop() {
		if _, err := Generate(io.Discard, Config{Lines: n, Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}
