package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
)

// Formats lists the output formats.
var Formats = []string{"table", "json", "csv"}

// Render writes r in format ("table", "json" or "csv").
func Render(w io.Writer, r *Report, format string) error {
	switch format {
	case "table", "":
		return RenderTable(w, r)
	case "json":
		return RenderJSON(w, r)
	case "csv":
		return RenderCSV(w, r)
	}
	return fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

// RenderJSON writes r as one indented JSON document.
func RenderJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// section is one table of the report, shared by the table and CSV forms.
type section struct {
	name   string // CSV section name
	title  string // table title
	header []string
	rows   [][]string
	note   string // printed under the table (approximate counts)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func sections(r *Report, bars bool) []section {
	s := r.Summary
	out := []section{{
		name: "summary", title: "Summary", header: []string{"metric", "value"},
		rows: [][]string{
			{"lines read", itoa(s.Lines)},
			{"postfix lines", itoa(s.PostfixLines)},
			{"recognised", itoa(s.Recognised)},
			{"context (no client)", itoa(s.Context)},
			{"skipped", itoa(s.Skipped)},
			{"too long", itoa(s.TooLong)},
			{"outside --since/--until", itoa(s.OutOfRange)},
			{"first", stamp(s.First)},
			{"last", stamp(s.Last)},
			{"connections", itoa(s.Connections)},
			{"messages accepted", itoa(s.Accepted)},
			{"rejects", itoa(s.Rejected)},
			{"benign rejects (postscreen 450 4.3.2)", itoa(s.RejectedBenign)},
			{"rejected clients", estimate(int64(s.RejectClients), s.RejectClientsEstimated)},
			{"delivered", itoa(s.Delivered)},
			{"deferred", itoa(s.Deferred)},
			{"bounced", itoa(s.Bounced)},
			{"abuse events", itoa(s.AbuseEvents)},
			{"reject warnings (warn_if_reject)", itoa(r.RejectWarnings.Total)},
		},
	}}
	w := r.RejectWarnings
	out = append(out, heloSection("helo", "Top rejected HELO names", "rejects", r.Helo),
		clientSection("clients", "Top rejected clients", "rejects", r.Clients),
		countSection("reasons", "Reject reasons", "reason", r.Reasons),
		countSection("other_reasons", "Other reject texts", "text", r.Other),
		countSection("recipients", "Top targeted unknown recipients", "recipient", r.Recipients),
		countSection("senders", "Top rejected senders", "sender", r.Senders),
		countSection("postscreen", "Postscreen outcomes", "outcome", r.Postscreen),
		hourSection(r.Hourly, bars),
		countSection("warning_reasons", "Reject warnings (warn_if_reject): reasons", "reason", w.Reasons),
		clientSection("warning_clients", "Reject warnings: top clients", "warnings", w.Clients),
		heloSection("warning_helo", "Reject warnings: top HELO names", "warnings", w.Helo))
	for _, a := range r.Approximate {
		for i := range out {
			if out[i].name == a.Section {
				out[i].note = fmt.Sprintf("approximate: more than %d distinct keys; each count may be up to %d below the true count, and a key not listed occurred at most %d times",
					a.Capacity, a.MaxUndercount, a.MaxUndercount)
			}
		}
	}
	return out
}

// estimate formats n, marked with "~" when it is an estimate.
func estimate(n int64, estimated bool) string {
	if estimated {
		return "~" + itoa(n)
	}
	return itoa(n)
}

func heloSection(name, title, count string, rows []HeloRow) section {
	s := section{name: name, title: title, header: []string{"helo", count, "clients"}}
	for _, h := range rows {
		s.rows = append(s.rows, []string{h.Helo, itoa(h.Rejects), estimate(int64(h.Clients), h.ClientsEstimated)})
	}
	return s
}

func clientSection(name, title, count string, rows []ClientRow) section {
	s := section{name: name, title: title, header: []string{"ip", "name", count, "reasons"}}
	for _, c := range rows {
		s.rows = append(s.rows, []string{c.IP, c.Name, itoa(c.Rejects), strings.Join(c.Reasons, " ")})
	}
	return s
}

func countSection(name, title, key string, rows []CountRow) section {
	s := section{name: name, title: title, header: []string{key, "count"}}
	for _, c := range rows {
		s.rows = append(s.rows, []string{c.Key, itoa(c.Count)})
	}
	return s
}

// hourSection lists activity per hour; the table form adds a bar of
// rejects scaled to the busiest hour and, past a week of hours, sums days.
func hourSection(hours []HourRow, bars bool) section {
	s := section{name: "hourly", title: "Activity per hour", header: []string{"hour", "connections", "accepted", "rejected", "abuse"}}
	if bars && len(hours) > 7*24 {
		hours = byDay(hours)
		s.title, s.header[0] = "Activity per day", "day"
	}
	var max int64
	for _, h := range hours {
		max = maxInt(max, h.Rejected)
	}
	if bars {
		s.header = append(s.header, "rejects")
	}
	for _, h := range hours {
		row := []string{h.Hour.Format("2006-01-02 15:04"), itoa(h.Connections), itoa(h.Accepted), itoa(h.Rejected), itoa(h.Abuse)}
		if bars {
			width := 0
			if max > 0 {
				width = int((h.Rejected*40 + max - 1) / max)
			}
			row = append(row, strings.Repeat("#", width))
		}
		s.rows = append(s.rows, row)
	}
	return s
}

func byDay(hours []HourRow) []HourRow {
	var out []HourRow
	for _, h := range hours {
		y, m, d := h.Hour.Date()
		day := time.Date(y, m, d, 0, 0, 0, 0, h.Hour.Location())
		if len(out) == 0 || !out[len(out)-1].Hour.Equal(day) {
			out = append(out, HourRow{Hour: day})
		}
		o := &out[len(out)-1]
		o.Connections += h.Connections
		o.Accepted += h.Accepted
		o.Rejected += h.Rejected
		o.Abuse += h.Abuse
	}
	return out
}

// cell shortens a table cell and makes control bytes visible, so a log
// line cannot garble the terminal.
func cell(s string) string {
	const max = 60
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			clean = false
			break
		}
	}
	if !clean {
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, s)
	}
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// RenderTable writes every section as an ASCII table with a title.
func RenderTable(w io.Writer, r *Report) error {
	for i, s := range sections(r, true) {
		if i > 0 {
			if _, err := io.WriteString(w, "\n"); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintf(w, "%s\n", s.title); err != nil {
			return err
		}
		if len(s.rows) == 0 {
			if _, err := io.WriteString(w, "  (none)\n"); err != nil {
				return err
			}
			if err := writeNote(w, s.note); err != nil {
				return err
			}
			continue
		}
		t := tablewriter.NewTable(w,
			tablewriter.WithRendition(tw.Rendition{Symbols: tw.NewSymbols(tw.StyleASCII)}),
			tablewriter.WithHeaderAutoFormat(tw.Off),
			tablewriter.WithHeaderAlignment(tw.AlignLeft),
			tablewriter.WithRowAlignment(tw.AlignLeft),
		)
		t.Header(s.header)
		for _, row := range s.rows {
			for i, c := range row {
				row[i] = cell(c)
			}
		}
		if err := t.Bulk(s.rows); err != nil {
			return err
		}
		if err := t.Render(); err != nil {
			return err
		}
		if err := writeNote(w, s.note); err != nil {
			return err
		}
	}
	return nil
}

func writeNote(w io.Writer, note string) error {
	if note == "" {
		return nil
	}
	_, err := fmt.Fprintf(w, "  %s\n", note)
	return err
}

// RenderCSV writes every section as a block of CSV records whose first
// field is the section name, so `grep ^helo,` selects one; a header record
// opens each block and an empty line separates blocks. When a section's
// counts are approximate, a last block "approximate" gives its bound.
func RenderCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	all := sections(r, false)
	if len(r.Approximate) > 0 {
		approx := section{name: "approximate", header: []string{"of_section", "capacity", "max_undercount"}}
		for _, a := range r.Approximate {
			approx.rows = append(approx.rows, []string{a.Section, strconv.Itoa(a.Capacity), itoa(a.MaxUndercount)})
		}
		all = append(all, approx)
	}
	for i, s := range all {
		if i > 0 {
			cw.Flush()
			if _, err := io.WriteString(w, "\n"); err != nil {
				return err
			}
		}
		if err := cw.Write(append([]string{"section"}, s.header...)); err != nil {
			return err
		}
		for _, row := range s.rows {
			if err := cw.Write(append([]string{s.name}, row...)); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}
