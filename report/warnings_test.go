package report

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/logparse"
)

// writeWarningLog writes n reject_warning lines: every third from one
// heavy client with one HELO name, the others each from a client and
// HELO name of their own; and one real reject.
func writeWarningLog(w *bytes.Buffer, n int) (heavy int) {
	for i := 0; i < n; i++ {
		client, helo := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), fmt.Sprintf("h%d.example", i)
		if i%3 == 0 {
			client, helo = "203.0.113.7", "friend"
			heavy++
		}
		fmt.Fprintf(w, "Dec  1 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject_warning: RCPT from unknown[%s]: 550 5.1.1 <r%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<s@b.example> to=<r%d@example.com> proto=ESMTP helo=<%s>\n", client, i, i, helo)
	}
	fmt.Fprintf(w, "Dec  1 10:00:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <friend>: Helo command rejected: go away; from=<s@b.example> to=<r@example.com> proto=ESMTP helo=<friend>\n")
	return heavy
}

// The reject warnings section is bounded like the other top sections and
// kept apart from rejects: a warning is neither a reject nor abuse.
func TestRejectWarningsBounded(t *testing.T) {
	const lines, capacity = 9000, 300
	var log bytes.Buffer
	heavy := int64(writeWarningLog(&log, lines))
	a := NewAggregator(Options{Capacity: capacity})
	p := logparse.NewParser(time.UTC, time.Date(2025, 12, 2, 0, 0, 0, 0, time.UTC))
	var ev event.Event
	for i, line := range strings.Split(strings.TrimSuffix(log.String(), "\n"), "\n") {
		a.Add(&ev, p.ParseInto(line, &ev))
		if h, c := len(a.warnHelo.m), len(a.warnClients.m); max(h, c) > capacity {
			t.Fatalf("line %d: tracked warning helo %d clients %d, capacity %d", i+1, h, c, capacity)
		}
	}
	r := a.Result(time.UTC)
	w := r.RejectWarnings
	if w.Total != lines || r.Summary.Rejected != 1 || r.Summary.AbuseEvents != 1 {
		t.Errorf("warnings %d rejects %d abuse %d; want %d, 1, 1", w.Total, r.Summary.Rejected, r.Summary.AbuseEvents, lines)
	}
	if len(w.Reasons) != 1 || w.Reasons[0] != (CountRow{Key: "unknown_recipient", Count: lines}) {
		t.Errorf("reasons %+v", w.Reasons)
	}
	if len(w.Clients) == 0 || w.Clients[0].IP != "203.0.113.7" || w.Clients[0].Rejects > heavy || w.Clients[0].Rejects < heavy-w.Clients[0].MaxUndercount {
		t.Errorf("top warned client %+v, want 203.0.113.7 with %d (less at most the bound)", w.Clients, heavy)
	}
	if len(w.Helo) == 0 || w.Helo[0].Helo != "friend" || w.Helo[0].Clients != 1 || w.Helo[0].Rejects < heavy-w.Helo[0].MaxUndercount {
		t.Errorf("top warned HELO %+v", w.Helo)
	}
	// the real reject's HELO is the only rejected one
	if len(r.Helo) != 1 || r.Helo[0].Helo != "friend" || r.Helo[0].Rejects != 1 {
		t.Errorf("rejected HELO names %+v", r.Helo)
	}
	approx := map[string]bool{}
	for _, ap := range r.Approximate {
		approx[ap.Section] = true
		if ap.MaxUndercount < 1 || ap.MaxUndercount > lines/(capacity/2+1) {
			t.Errorf("approximation %+v", ap)
		}
	}
	if !approx["warning_clients"] || !approx["warning_helo"] || approx["clients"] || approx["helo"] {
		t.Errorf("approximate sections %v", approx)
	}
	var table, csvOut bytes.Buffer
	if err := RenderTable(&table, r); err != nil {
		t.Fatal(err)
	}
	if err := RenderCSV(&csvOut, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "Reject warnings: top clients\n") || !strings.Contains(csvOut.String(), "\nwarning_clients,203.0.113.7,unknown,") ||
		!strings.Contains(csvOut.String(), "\napproximate,warning_helo,300,") {
		t.Errorf("table or CSV without the warnings:\n%s\n%s", table.String(), csvOut.String())
	}
}

// Parallel workers merge their warnings: the same report as one worker.
func TestRejectWarningsMerge(t *testing.T) {
	var log bytes.Buffer
	heavy := int64(writeWarningLog(&log, 12000)) // several 1 MiB chunks
	path := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(path, log.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var got [2]RejectWarnings
	for i, workers := range []int{1, 3} {
		agg, err := Collect([]string{path}, nil, Options{Top: 3}, CollectOptions{Loc: time.UTC, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		got[i] = agg.Result(time.UTC).RejectWarnings
	}
	if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
		t.Errorf("1 worker %+v\n3 workers %+v", got[0], got[1])
	}
	if got[1].Total != 12000 || got[1].Clients[0].Rejects != heavy || got[1].Helo[0].Rejects != heavy {
		t.Errorf("merged %+v, want 12000 warnings, %d from the heavy client", got[1], heavy)
	}
}
