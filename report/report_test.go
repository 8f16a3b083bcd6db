package report

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mxguard/mxguard/internal/loggen"
)

var update = flag.Bool("update", false, "rewrite golden files from the current output")

// collectFiles runs the full pipeline in UTC with a fixed year anchor.
func collectFiles(t *testing.T, opts Options, paths ...string) *Report {
	t.Helper()
	agg, err := Collect(paths, nil, opts, CollectOptions{Loc: time.UTC, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	return agg.Result(time.UTC)
}

const labLog = "../testdata/lab/mail.log"

// independentHeloCounts counts reject lines per helo= the way an
// administrator's shell pipeline does (grep 'reject: ' | sed helo=<...>),
// leaving out postscreen's benign "450 4.3.2" after its deep tests.
func independentHeloCounts(t *testing.T, path string) (counts map[string]int64, clients map[string]map[string]bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	heloRE := regexp.MustCompile(`helo=<(.*)>$`)
	clientRE := regexp.MustCompile(`reject: \S+ from [^\[]*\[([^\]]+)\]`)
	counts, clients = map[string]int64{}, map[string]map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, "reject: ") || strings.Contains(l, ": 450 4.3.2 ") {
			continue
		}
		m := heloRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		counts[m[1]]++
		if c := clientRE.FindStringSubmatch(l); c != nil {
			if clients[m[1]] == nil {
				clients[m[1]] = map[string]bool{}
			}
			clients[m[1]][c[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return counts, clients
}

// The per-HELO reject counts of the report must equal an independent count
// over the real-Postfix lab log.
func TestHeloCountsMatchShellPipeline(t *testing.T) {
	want, wantClients := independentHeloCounts(t, labLog)
	if len(want) < 3 {
		t.Fatalf("lab log has only %d rejected HELO names; the test would prove little", len(want))
	}
	r := collectFiles(t, Options{Top: 1 << 20}, labLog)
	got := map[string]HeloRow{}
	for _, h := range r.Helo {
		got[h.Helo] = h
	}
	for helo, n := range want {
		if got[helo].Rejects != n {
			t.Errorf("helo %q: report %d rejects, independent count %d", helo, got[helo].Rejects, n)
		}
		if got[helo].Clients != len(wantClients[helo]) {
			t.Errorf("helo %q: report %d clients, independent count %d", helo, got[helo].Clients, len(wantClients[helo]))
		}
	}
	if len(got) != len(want) {
		t.Errorf("report has %d HELO rows, independent count %d", len(got), len(want))
	}
}

// Golden outputs for every format over the bundled samples. Run with
// -update to regenerate; *.got files are always written for diffing.
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("../testdata/report/*.log")
	inputs = append(inputs, labLog)
	for _, in := range inputs {
		r := collectFiles(t, Options{Top: 10}, in)
		base := strings.TrimSuffix(filepath.Base(in), ".log")
		if in == labLog {
			base = "lab"
		}
		for _, format := range Formats {
			t.Run(base+"."+format, func(t *testing.T) {
				var buf bytes.Buffer
				if err := Render(&buf, r, format); err != nil {
					t.Fatal(err)
				}
				ext := map[string]string{"table": "txt", "json": "json", "csv": "csv"}[format]
				golden := filepath.Join("../testdata/report", base+".golden."+ext)
				if err := os.WriteFile(golden+".got", buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				if *update {
					if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./report -update)", err)
				}
				if !bytes.Equal(want, buf.Bytes()) {
					t.Errorf("%s differs from %s.got", golden, golden)
				}
			})
		}
	}
}

func TestAggregate(t *testing.T) {
	const h = "Nov 25 10:49:00 mx1 postfix/smtpd[1]: "
	lines := []string{
		h + "connect from unknown[203.0.113.5]",
		h + "NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 550 5.1.1 <a@example.com>: Recipient address rejected: User unknown in local recipient table; from=<s@x.example> to=<a@example.com> proto=ESMTP helo=<friend>",
		h + "NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 550 5.1.1 <b@example.com>: Recipient address rejected: User unknown in local recipient table; from=<s@x.example> to=<b@example.com> proto=ESMTP helo=<friend>",
		h + "NOQUEUE: reject: RCPT from unknown[203.0.113.6]: 554 5.7.1 <x@far.example>: Relay access denied; from=<> to=<x@far.example> proto=ESMTP helo=<friend>",
		"Nov 25 11:10:00 mx1 postfix/postscreen[2]: NOQUEUE: reject: RCPT from [198.51.100.5]:4321: 450 4.3.2 Service currently unavailable; from=<a@a.example>, to=<u@example.com>, proto=ESMTP, helo=<a.example>",
		"Nov 25 11:10:00 mx1 postfix/postscreen[2]: PASS NEW [198.51.100.5]:4321",
		"Nov 25 11:11:00 mx1 postfix/smtpd[1]: 4F2A31C0B2: client=a.example[198.51.100.5]",
		"Nov 25 11:11:00 mx1 postfix/local[3]: 4F2A31C0B2: to=<u@example.com>, relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)",
		"Nov 25 11:11:00 mx1 kernel: junk",
		"Nov 25 11:11:00 mx1 postfix/smtpd[1]: warning: something we do not know",
		"\x00\x01binary\xff\xfe",
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := collectFiles(t, Options{}, path)
	s := r.Summary
	if s.Lines != 11 || s.PostfixLines != 9 || s.Recognised != 8 || s.Skipped != 3 {
		t.Errorf("summary lines %d postfix %d recognised %d skipped %d", s.Lines, s.PostfixLines, s.Recognised, s.Skipped)
	}
	if s.Rejected != 3 || s.RejectedBenign != 1 || s.Accepted != 1 || s.Delivered != 1 || s.Connections != 1 || s.RejectClients != 2 {
		t.Errorf("summary %+v", s)
	}
	if len(r.Helo) != 1 || r.Helo[0] != (HeloRow{Helo: "friend", Rejects: 3, Clients: 2}) {
		t.Errorf("helo %+v", r.Helo)
	}
	if len(r.Clients) != 2 || r.Clients[0].IP != "203.0.113.5" || r.Clients[0].Rejects != 2 ||
		strings.Join(r.Clients[1].Reasons, ",") != "relay_denied" {
		t.Errorf("clients %+v", r.Clients)
	}
	if len(r.Recipients) != 2 || r.Recipients[0].Key != "a@example.com" {
		t.Errorf("recipients %+v", r.Recipients)
	}
	if len(r.Senders) != 2 || r.Senders[0] != (CountRow{Key: "s@x.example", Count: 2}) || r.Senders[1] != (CountRow{Key: "<>", Count: 1}) {
		t.Errorf("senders %+v", r.Senders)
	}
	if len(r.Hourly) != 2 || r.Hourly[0].Rejected != 3 || r.Hourly[1].Accepted != 1 {
		t.Errorf("hourly %+v", r.Hourly)
	}

	// --since/--until keep only the 11:00 hour; the rest is counted apart.
	r = collectFiles(t, Options{Since: time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC), Until: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}, path)
	if r.Summary.Rejected != 0 || r.Summary.OutOfRange != 4 || r.Summary.Accepted != 1 {
		t.Errorf("with since/until: %+v", r.Summary)
	}
}

// Gzip is detected by content, several files are read in order, and the
// result equals that of the plain files; a truncated .gz is an error that
// names the file, with what was read still counted.
func TestCollectGzipAndErrors(t *testing.T) {
	const line = "Nov 25 10:49:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <x@far.example>: Relay access denied; from=<> to=<x@far.example> proto=ESMTP helo=<bot>\n"
	dir := t.TempDir()
	plain := filepath.Join(dir, "mail.log")
	os.WriteFile(plain, []byte(strings.Repeat(line, 3)), 0o644)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write([]byte(strings.Repeat(line, 5000)))
	zw.Close()
	gz := filepath.Join(dir, "mail.log.2") // no .gz suffix: magic bytes decide
	os.WriteFile(gz, zbuf.Bytes(), 0o644)
	r := collectFiles(t, Options{}, gz, plain)
	if r.Summary.Rejected != 5003 || r.Helo[0].Rejects != 5003 {
		t.Fatalf("rejected %d", r.Summary.Rejected)
	}
	bad := filepath.Join(dir, "mail.log.3.gz")
	os.WriteFile(bad, zbuf.Bytes()[:zbuf.Len()/2], 0o644)
	agg, err := Collect([]string{bad}, nil, Options{}, CollectOptions{Loc: time.UTC})
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("truncated gzip: err = %v", err)
	}
	if agg.Result(time.UTC).Summary.Lines == 0 {
		t.Errorf("nothing counted before the corrupt part")
	}
}

// Junk input: NUL bytes, invalid UTF-8, a 10 MB line, lines without a
// newline at the end: counted and skipped, never a crash.
func TestJunkInput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "junk.log")
	var b bytes.Buffer
	b.WriteString("\x00\x00\x00\n\xff\xfe\xfd\n")
	b.WriteString(strings.Repeat("A", 10<<20) + "\n")
	b.WriteString("Nov 25 10:49:00 mx1 postfix/smtpd[1]: connect from unknown[203.0.113.5]\n")
	b.WriteString(strings.Repeat("B", 100<<10) + "\n")
	b.WriteString("Nov 25 10:49:00 mx1 postfix/smtpd[1]: connect from unknown[203.0.113.6]") // no newline
	os.WriteFile(path, b.Bytes(), 0o644)
	r := collectFiles(t, Options{}, path)
	s := r.Summary
	if s.Connections != 2 || s.TooLong != 2 || s.Lines != 6 || s.Skipped != 4 {
		t.Errorf("summary %+v", s)
	}
}

// Keys must never alias the reused line buffers: the same input must give
// byte-identical reports, whatever the number of workers.
func TestDeterministicOverGeneratedLog(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 300k lines")
	}
	path := filepath.Join(t.TempDir(), "mail.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loggen.Generate(f, loggen.Config{Lines: 300000, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	render := func(workers int) string {
		agg, err := Collect([]string{path}, nil, Options{Top: 50}, CollectOptions{Loc: time.UTC, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		RenderJSON(&b, agg.Result(time.UTC))
		return b.String()
	}
	one, two, again := render(1), render(2), render(2)
	if one != two || two != again {
		os.WriteFile(filepath.Join(os.TempDir(), "report-1.json"), []byte(one), 0o644)
		os.WriteFile(filepath.Join(os.TempDir(), "report-2.json"), []byte(two), 0o644)
		os.WriteFile(filepath.Join(os.TempDir(), "report-3.json"), []byte(again), 0o644)
		t.Fatalf("reports differ between runs or worker counts (see %s/report-[123].json)", os.TempDir())
	}
}

// Counting an existing key through an aliasing string must not replace the
// stored key (a map assignment would).
func TestCountDoesNotKeepAliasedKeys(t *testing.T) {
	m := newTopCounter[string, struct{}](10, strings.Clone, nil)
	buf := []byte("alpha")
	count(m, string(buf))
	alias := unsafe.String(&buf[0], len(buf))
	count(m, alias)
	copy(buf, "omega")
	if m.m["alpha"] == nil || m.m["alpha"].n != 2 || len(m.m) != 1 {
		t.Fatalf("counter %v", m.counts())
	}
	long := strings.Repeat("x", maxKeyLen+10)
	count(m, long)
	count(m, long)
	if n := m.m[long[:maxKeyLen]].n; n != 2 {
		t.Fatalf("long key counted %d", n)
	}
}
