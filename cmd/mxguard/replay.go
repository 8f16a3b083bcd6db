package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/journal"
	"github.com/mxguard/mxguard/internal/pipeline"
)

func runReplay(e *env, args []string) error {
	fs := newFlagSet(e, "replay", "[FILE...]",
		"Run the detectors over old logs and print the bans that would have been made, without touching\n"+
			"the block list or the firewall. FILE may be plain, gzip-compressed or - for stdin (journalctl -o json\n"+
			"output is read too); no FILE reads\n"+
			"the configured logs. Files are read in the order given (oldest first for rotated logs).\n"+
			"--format json prints one object per ban: ip, detector, reason, evidence, time, until, offence.")
	cfgPath := fs.String("config", "", "config file (detectors, allowlist, ban); default "+config.DefaultPath+" if it exists")
	format := fs.String("format", "table", "output format: table or json")
	tz := fs.String("tz", "", "time zone of timestamps without one (BSD syslog): Local, UTC or an IANA name (default: the config's tail.tz)")
	evidence := fs.Bool("evidence", false, "json: include the log lines behind each ban")
	fromJournal := fs.Bool("journal", false, "replay Postfix's entries of the systemd journal (journalctl; the config's journal entry in logs, if any, chooses the identifiers) instead of files")
	since := fs.String("since", "", "with --journal: entries at or after this time (RFC 3339, YYYY-MM-DD[ HH:MM], or a duration like 24h meaning that long ago)")
	until := fs.String("until", "", "with --journal: entries before this time (same forms as --since)")
	files, err := parseFlags(e, fs, args)
	if err != nil {
		return err
	}
	if err := oneOf("format", *format, "table", "json"); err != nil {
		return err
	}
	var loc *time.Location
	if *tz != "" {
		if loc, err = time.LoadLocation(*tz); err != nil {
			return usagef("--tz %q: %v", *tz, err)
		}
	}
	cfg, err := config.Load(config.Find(*cfgPath))
	if err != nil {
		return &configError{err}
	}
	if loc == nil {
		loc = cfg.Tail.Location()
	}
	if (*since != "" || *until != "") && !*fromJournal {
		return usagef("--since and --until select journal entries: use them with --journal")
	}
	var closeJournal func() error
	if *fromJournal {
		spec := "journal"
		for _, l := range cfg.Logs {
			if journal.IsJournal(l) {
				spec = l
			}
		}
		from, to, err := parseRange(*since, *until, loc)
		if err != nil {
			return err
		}
		if files, closeJournal, err = journalInput(e, files, spec, from, to); err != nil {
			return err
		}
		defer closeJournal()
	}
	if len(files) == 0 {
		files = cfg.Logs
	}
	for _, f := range files { // fail before printing anything
		if f == "-" {
			continue
		}
		if journal.IsJournal(f) {
			return usagef("logs entry %q: give the journal on stdin: journalctl -o json --since ... | mxguard replay -", f)
		}
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		fh.Close()
	}
	res, err := pipeline.Replay(context.Background(), files, pipeline.ReplayOptions{
		Detectors: cfg.Detectors, Allowlist: cfg.Allowlist, Ban: cfg.Ban, Loc: loc, Stdin: e.stdin,
	})
	if err != nil {
		return err
	}
	if closeJournal != nil {
		if err := closeJournal(); err != nil {
			return err
		}
	}
	w := bufio.NewWriter(e.stdout)
	if *format == "json" {
		enc := json.NewEncoder(w)
		for _, b := range res.Bans {
			if !*evidence {
				b.Lines = nil
			}
			if err := enc.Encode(b); err != nil {
				return err
			}
		}
		return w.Flush()
	}
	rows := make([][]string, 0, len(res.Bans))
	for _, b := range res.Bans {
		rows = append(rows, []string{b.Time.In(loc).Format(time.DateTime), b.IP.String(), b.Detector,
			fmt.Sprint(b.Evidence), fmt.Sprint(b.Offence), b.Until.Sub(b.Time).String(), b.Reason})
	}
	fmt.Fprintln(w, "Bans that would have been made")
	if err := writeTable(w, []string{"TIME", "IP", "DETECTOR", "EVIDENCE", "OFFENCE", "FOR", "REASON"}, rows); err != nil {
		return err
	}
	rows = rows[:0]
	for _, s := range res.Summary {
		rows = append(rows, []string{s.Detector, fmt.Sprint(s.Decisions), fmt.Sprint(s.Bans), fmt.Sprint(s.Extended),
			fmt.Sprint(s.Refused), fmt.Sprint(s.Warned)})
	}
	fmt.Fprintln(w, "\nDetectors")
	if err := writeTable(w, []string{"DETECTOR", "DECISIONS", "BANS", "EXTENDED", "REFUSED", "WARNED"}, rows); err != nil {
		return err
	}
	st := res.Stats
	fmt.Fprintf(w, "\n%d lines, %d events, %d skipped; %d %s\n", st.Lines, st.Events, st.Skipped(),
		len(res.Bans), plural(len(res.Bans), "ban", "bans"))
	return w.Flush()
}
