package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/journal"
	"github.com/mxguard/mxguard/logparse"
	"github.com/mxguard/mxguard/report"
)

// progressThreshold is the input size above which a terminal gets a bar.
const progressThreshold = 64 << 20

func runReport(e *env, args []string) error {
	fs := newFlagSet(e, "report", "[FILE...]",
		"Aggregate Postfix logs into a report. FILE may be plain, rotated, gzip-compressed or - for stdin;\nno FILE reads stdin. Files are read in the order given. journalctl's JSON output is read too:\n  journalctl -o json --since today SYSLOG_IDENTIFIER=postfix/smtpd | mxguard report")
	format := fs.String("format", "table", "output format: table, json or csv")
	top := fs.Int("top", 10, "rows per section")
	capacity := fs.Int("capacity", report.DefaultCapacity, "keys tracked per top section (HELOs, clients, recipients, senders, texts): exact up to this many distinct keys, then approximate with the bound printed; memory grows with it")
	since := fs.String("since", "", "only lines at or after this time (RFC 3339, YYYY-MM-DD[ HH:MM], or a duration like 24h meaning that long ago)")
	until := fs.String("until", "", "only lines before this time (same forms as --since)")
	tz := fs.String("tz", "Local", "time zone of timestamps without one (BSD syslog): Local, UTC or an IANA name")
	progress := fs.Bool("progress", true, "show a progress bar on a terminal for large inputs")
	fromJournal := fs.Bool("journal", false, "read Postfix's entries from the systemd journal (journalctl), --since/--until selecting them, instead of files")
	files, err := parseFlags(e, fs, args)
	if err != nil {
		return err
	}
	if err := oneOf("format", *format, report.Formats...); err != nil {
		return err
	}
	if *top < 1 {
		return usagef("--top %d: must be at least 1", *top)
	}
	if *capacity < *top || *capacity < 2 {
		return usagef("--capacity %d: must be at least --top (%d) and 2", *capacity, *top)
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return usagef("--tz %q: %v", *tz, err)
	}
	opts := report.Options{Top: *top, Capacity: *capacity}
	if opts.Since, opts.Until, err = parseRange(*since, *until, loc); err != nil {
		return err
	}
	var closeJournal func() error
	if *fromJournal {
		if files, closeJournal, err = journalInput(e, files, "journal", opts.Since, opts.Until); err != nil {
			return err
		}
		defer closeJournal()
	}
	if len(files) == 0 {
		files = []string{"-"}
	}
	// A missing or unreadable file fails before anything is printed.
	for _, f := range files {
		if f == "-" {
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		fh.Close()
	}

	co := report.CollectOptions{Loc: loc}
	var bar *progressbar.ProgressBar
	if total := totalSize(files); *progress && e.stderrIsTTY && total > progressThreshold {
		bar = progressbar.DefaultBytes(total, "reading")
		co.Progress = func(n int64) { _ = bar.Set64(n) }
	}
	agg, readErr := report.Collect(files, e.stdin, opts, co)
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(e.stderr)
	}
	// What was read is reported even when a file failed half way (a
	// corrupt .gz): the error still makes the exit status 1.
	w := bufio.NewWriter(e.stdout)
	if err := report.Render(w, agg.Result(loc), *format); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if readErr == nil && closeJournal != nil {
		readErr = closeJournal()
	}
	return readErr
}

// journalInput makes --journal's input: journalctl's entries of spec
// between since and until, as stdin ("-"). The returned func waits for
// journalctl and reports its failure (it may be called more than once).
func journalInput(e *env, files []string, spec string, since, until time.Time) ([]string, func() error, error) {
	if len(files) > 0 {
		return nil, nil, usagef("--journal reads the journal: give no FILE")
	}
	r, err := journal.Export("", spec, since, until)
	if err != nil {
		return nil, nil, err
	}
	e.stdin = r
	var once sync.Once
	var cerr error
	return []string{"-"}, func() error { once.Do(func() { cerr = r.Close() }); return cerr }, nil
}

func totalSize(files []string) int64 {
	var n int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && f != "-" {
			n += st.Size()
		}
	}
	return n
}

// parseRange reads --since and --until (either may be empty: no bound).
func parseRange(since, until string, loc *time.Location) (from, to time.Time, err error) {
	now := time.Now()
	if from, err = parseWhen("since", since, now, loc); err != nil {
		return
	}
	to, err = parseWhen("until", until, now, loc)
	return
}

// parseWhen reads --since/--until: RFC 3339, a date with optional time, or
// a duration meaning that long before now.
func parseWhen(name, s string, now time.Time, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usagef("--%s %q: want RFC 3339, YYYY-MM-DD[ HH:MM[:SS]] or a duration like 24h", name, s)
}

func runEvents(e *env, args []string) (err error) {
	fs := newFlagSet(e, "events", "[FILE...]",
		"Print one JSON object per recognised Postfix line (the events contract in README.md).\nFILE may be plain, gzip-compressed or - for stdin; no FILE reads stdin.\njournalctl's JSON output (journalctl -o json ...) is read too.")
	tz := fs.String("tz", "Local", "time zone of timestamps without one (BSD syslog)")
	abuseOnly := fs.Bool("abuse", false, "only print lines that are evidence against a client")
	kinds := fs.String("kind", "", "only these kinds, comma-separated (e.g. reject,pregreet)")
	since := fs.String("since", "", "only lines at or after this time (RFC 3339, YYYY-MM-DD[ HH:MM], or a duration like 24h meaning that long ago)")
	until := fs.String("until", "", "only lines before this time (same forms as --since)")
	fromJournal := fs.Bool("journal", false, "read Postfix's entries from the systemd journal (journalctl), --since/--until selecting them, instead of files")
	files, err := parseFlags(e, fs, args)
	if err != nil {
		return err
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return usagef("--tz %q: %v", *tz, err)
	}
	from, to, err := parseRange(*since, *until, loc)
	if err != nil {
		return err
	}
	if *fromJournal {
		var closeJournal func() error
		if files, closeJournal, err = journalInput(e, files, "journal", from, to); err != nil {
			return err
		}
		defer func() {
			if cerr := closeJournal(); err == nil {
				err = cerr
			}
		}()
	}
	var want [64]bool
	filterKinds := *kinds != ""
	for _, k := range strings.Split(*kinds, ",") {
		if k == "" {
			continue
		}
		kind, ok := event.ParseKind(strings.TrimSpace(k))
		if !ok {
			return usagef("--kind %q: unknown kind", k)
		}
		want[kind] = true
	}
	if len(files) == 0 {
		files = []string{"-"}
	}
	w := bufio.NewWriterSize(e.stdout, 64<<10)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for _, f := range files {
		in, err := logparse.Open(f, e.stdin)
		if err != nil {
			return err
		}
		p := logparse.NewParser(loc, in.ModTime)
		var ev event.Event
		var st logparse.LineStats
		err = logparse.ScanLines(in.Reader(), &st, func(line string) error {
			if p.ParseInto(line, &ev) != nil {
				return nil
			}
			if *abuseOnly && !ev.Abuse || filterKinds && !want[ev.Kind] ||
				!from.IsZero() && ev.Time.Before(from) || !to.IsZero() && !ev.Time.Before(to) {
				return nil
			}
			return enc.Encode(ev)
		})
		in.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return w.Flush()
}
