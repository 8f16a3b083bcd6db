package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/logparse"
)

// checkBounds asserts the Misra-Gries guarantees of t against the true
// counts: no tracked count above the truth or more than under below it, no
// untracked key more frequent than under.
func checkBounds(t *testing.T, tc *topCounter[string, struct{}], truth map[string]int64) {
	t.Helper()
	for k, n := range truth {
		got := int64(0)
		if c := tc.m[k]; c != nil {
			got = c.n
		}
		if got > n || n-got > tc.under {
			t.Fatalf("key %q: counted %d, true %d, bound %d", k, got, n, tc.under)
		}
	}
}

func TestTopCounter(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		distinct int // keys beyond the heavy ones, each seen once
		exact    bool
	}{
		{name: "fits: exact", capacity: 64, distinct: 60, exact: true},
		{name: "exactly full: exact", capacity: 64, distinct: 61, exact: true},
		{name: "one too many", capacity: 64, distinct: 62},
		{name: "many distinct", capacity: 64, distinct: 20000},
		{name: "many distinct, heavy keys stand out", capacity: 256, distinct: 5000},
		{name: "tiny capacity", capacity: 2, distinct: 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			// three heavy keys (300, 200, 100 times) among the distinct ones
			var stream []string
			for i, n := range []int{300, 200, 100} {
				for range n {
					stream = append(stream, fmt.Sprintf("heavy%d", i))
				}
			}
			for i := range tc.distinct {
				stream = append(stream, fmt.Sprintf("k%d", i))
			}
			r.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
			truth := map[string]int64{}
			// one summary over the whole stream, three merged ones over thirds
			whole := newTopCounter[string, struct{}](tc.capacity, strings.Clone, nil)
			parts := make([]*topCounter[string, struct{}], 3)
			for i := range parts {
				parts[i] = newTopCounter[string, struct{}](tc.capacity, strings.Clone, nil)
			}
			for i, k := range stream {
				truth[k]++
				count(whole, k)
				count(parts[i%3], k)
				if len(whole.m) > tc.capacity || len(parts[i%3].m) > tc.capacity {
					t.Fatalf("after %d keys: %d and %d tracked, capacity %d", i+1, len(whole.m), len(parts[i%3].m), tc.capacity)
				}
			}
			parts[0].mergeFrom(parts[1])
			parts[0].mergeFrom(parts[2])
			if len(parts[0].m) > tc.capacity {
				t.Fatalf("merged: %d tracked, capacity %d", len(parts[0].m), tc.capacity)
			}
			for name, got := range map[string]*topCounter[string, struct{}]{"whole": whole, "merged": parts[0]} {
				checkBounds(t, got, truth)
				if tc.exact && got.under != 0 {
					t.Errorf("%s: bound %d with %d distinct keys in capacity %d", name, got.under, len(truth), tc.capacity)
				}
				if !tc.exact && got.under == 0 {
					t.Errorf("%s: no bound with %d distinct keys in capacity %d", name, len(truth), tc.capacity)
				}
				if limit := int64(len(stream)) / int64(tc.capacity/2+1); got.under > limit {
					t.Errorf("%s: bound %d above n/(capacity/2+1) = %d", name, got.under, limit)
				}
				if got.under < 99 { // then the heavy keys outcount the rest, in order
					top := topKeys(got.counts(), 3, strLess)
					if fmt.Sprint(top) != "[heavy0 heavy1 heavy2]" {
						t.Errorf("%s: top %v", name, top)
					}
				}
			}
		})
	}
}

func TestDistinctCounter(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 100000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			a, b, whole := distinctCounter{size: 64}, distinctCounter{size: 64}, distinctCounter{size: 64}
			for i := range n {
				h := addrHash(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
				whole.add(h)
				whole.add(h) // repeats do not count
				if i%2 == 0 {
					a.add(h)
				} else {
					b.add(h)
				}
			}
			a.mergeFrom(&b)
			for name, d := range map[string]*distinctCounter{"whole": &whole, "merged": &a} {
				got, estimated := d.count()
				if n <= 64 {
					if got != int64(n) || estimated {
						t.Errorf("%s: %d (estimated %v), want exactly %d", name, got, estimated, n)
					}
					continue
				}
				// 4 standard errors of the K-minimum-values estimate
				if !estimated || math.Abs(float64(got)-float64(n)) > 4*float64(n)/math.Sqrt(62) {
					t.Errorf("%s: %d (estimated %v), want about %d", name, got, estimated, n)
				}
			}
		})
	}
}

// writeDistinctLog writes n reject lines in which every line has its own
// client, HELO and sender, and its own recipient (even lines) or reject
// text (odd lines): the worst case for the report's memory.
func writeDistinctLog(w io.Writer, n int) error {
	for i := range n {
		s := i % 86400
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if i >= 1<<24 {
			ip = fmt.Sprintf("2001:db8::%x", i)
		}
		head := fmt.Sprintf("Nov 26 %02d:%02d:%02d mx postfix/smtpd[%d]: NOQUEUE: reject: RCPT from unknown[%s]: ", s/3600, s/60%60, s%60, 1000+i%30000, ip)
		var err error
		if i%2 == 0 {
			_, err = fmt.Fprintf(w, "%s550 5.1.1 <r%d@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<s%d@sender%d.example> to=<r%d@example.com> proto=ESMTP helo=<h%d.example>\n", head, i, i, i, i, i)
		} else {
			_, err = fmt.Fprintf(w, "%s554 5.7.1 <r%d@example.com>: Policy rejection %d; from=<s%d@sender%d.example> to=<r%d@example.com> proto=ESMTP helo=<h%d.example>\n", head, i, i, i, i, i, i)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// TestAggregatorBounded feeds lines whose every key is new and checks after
// each line that no top section tracks more than the capacity, then that
// every output form says the counts are approximate.
func TestAggregatorBounded(t *testing.T) {
	const lines, capacity = 20000, 500
	var log bytes.Buffer
	if err := writeDistinctLog(&log, lines); err != nil {
		t.Fatal(err)
	}
	a := NewAggregator(Options{Capacity: capacity})
	p := logparse.NewParser(time.UTC, time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC))
	var ev event.Event
	for i, line := range strings.Split(strings.TrimSuffix(log.String(), "\n"), "\n") {
		a.Add(&ev, p.ParseInto(line, &ev))
		if h, c, r, s, o := len(a.helo.m), len(a.clients.m), len(a.recipients.m), len(a.senders.m), len(a.other.m); max(h, c, r, s, o) > capacity {
			t.Fatalf("line %d: tracked helo %d clients %d recipients %d senders %d other %d, capacity %d", i+1, h, c, r, s, o, capacity)
		}
	}
	rep := a.Result(time.UTC)
	if rep.Summary.Rejected != lines {
		t.Fatalf("rejected %d, want %d", rep.Summary.Rejected, lines)
	}
	if got := rep.Summary.RejectClients; !rep.Summary.RejectClientsEstimated || math.Abs(float64(got-lines)) > lines/5 {
		t.Errorf("reject clients %d (estimated %v), want about %d", got, rep.Summary.RejectClientsEstimated, lines)
	}
	sections := map[string]bool{}
	for _, ap := range rep.Approximate {
		sections[ap.Section] = true
		// every key occurred once: the bound must allow a count of 0
		if ap.Capacity != capacity || ap.MaxUndercount < 1 || ap.MaxUndercount > lines/(capacity/2+1) {
			t.Errorf("approximation %+v", ap)
		}
	}
	if fmt.Sprint(sections) != "map[clients:true helo:true other_reasons:true recipients:true senders:true]" {
		t.Errorf("approximate sections %v", sections)
	}
	if len(rep.Helo) == 0 || rep.Helo[0].MaxUndercount < 1 || len(rep.Recipients) == 0 || rep.Recipients[0].MaxUndercount < 1 {
		t.Errorf("rows without their bound: helo %+v recipients %+v", rep.Helo, rep.Recipients)
	}

	var table, csvOut, js bytes.Buffer
	if err := RenderTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	if err := RenderCSV(&csvOut, rep); err != nil {
		t.Fatal(err)
	}
	if err := RenderJSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	bound := fmt.Sprint(rep.Approximate[0].MaxUndercount)
	if !strings.Contains(table.String(), "approximate: more than 500 distinct keys; each count may be up to "+bound+" below") ||
		!strings.Contains(table.String(), "| ~") {
		t.Errorf("table without the approximation note or estimate mark:\n%s", table.String())
	}
	if !strings.Contains(csvOut.String(), "\nsection,of_section,capacity,max_undercount\napproximate,helo,500,"+bound+"\n") {
		t.Errorf("CSV without the approximate block:\n%s", csvOut.String())
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Approximate) != 5 || back.Helo[0].MaxUndercount != rep.Helo[0].MaxUndercount || !back.Summary.RejectClientsEstimated {
		t.Errorf("JSON lost the approximation: %+v", back.Approximate)
	}
}
