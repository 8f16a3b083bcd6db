package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/dnsbl"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/daemon"
	"github.com/mxguard/mxguard/internal/peers"
	"github.com/mxguard/mxguard/internal/pipeline"
)

// ctlFlags are the flags every control command takes.
type ctlFlags struct {
	config  *string
	socket  *string
	timeout *time.Duration
}

func addCtlFlags(fs *flagSet) ctlFlags {
	return ctlFlags{
		config:  fs.String("config", "", "config file, to find control_socket (default "+config.DefaultPath+" if it exists)"),
		socket:  fs.String("socket", "", "control socket path (overrides the config)"),
		timeout: fs.Duration("timeout", 30*time.Second, "give up after this long"),
	}
}

// call sends one request to the daemon.
func (f ctlFlags) call(req control.Request, out any) error {
	sock := *f.socket
	if sock == "" {
		cfg, err := config.Load(config.Find(*f.config))
		if err != nil {
			return &configError{err}
		}
		sock = cfg.ControlSocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), *f.timeout)
	defer cancel()
	return control.Call(ctx, sock, req, out)
}

func runBan(e *env, args []string) error {
	fs := newFlagSet(e, "ban", "IP|CIDR",
		"Ban an address or network now (detector \"manual\"), through the running daemon.")
	cf := addCtlFlags(fs)
	dur := fs.String("for", "", "ban duration, e.g. 30m, 12h, 7d (default: the escalation schedule, ban.base for a first offence)")
	reason := fs.String("reason", "", "reason recorded with the ban (default \"manual ban\")")
	pos, err := parseFlags(e, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one IP or CIDR (see --help)")
	}
	if _, err := ban.ParsePrefix(pos[0]); err != nil {
		return usagef("%v", err)
	}
	if _, err := daemon.ParseBanDuration(*dur); err != nil {
		return usagef("--for: %v", err)
	}
	var b ban.Ban
	if err := cf.call(control.Request{Cmd: control.CmdBan, IP: pos[0], For: *dur, Reason: *reason}, &b); err != nil {
		return err
	}
	verb := "banned"
	if b.DryRun {
		verb = "would ban (daemon in dry-run)"
	}
	fmt.Fprintf(e.stdout, "%s %s until %s (offence %d)\n", verb, b.Prefix, b.Until.Local().Format(time.RFC3339), b.Offence)
	return nil
}

func runUnban(e *env, args []string) error {
	fs := newFlagSet(e, "unban", "IP|CIDR", "Lift a ban (exactly that address or network) through the running daemon.")
	cf := addCtlFlags(fs)
	pos, err := parseFlags(e, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one IP or CIDR (see --help)")
	}
	if _, err := ban.ParsePrefix(pos[0]); err != nil {
		return usagef("%v", err)
	}
	var r daemon.UnbanResult
	if err := cf.call(control.Request{Cmd: control.CmdUnban, IP: pos[0]}, &r); err != nil {
		return err
	}
	if r.Removed {
		fmt.Fprintf(e.stdout, "unbanned %s\n", r.IP)
	} else {
		fmt.Fprintf(e.stdout, "%s was not banned (removed from the firewall anyway)\n", r.IP)
	}
	return nil
}

func runList(e *env, args []string) error {
	fs := newFlagSet(e, "list", "", "List the active bans held by the running daemon.\n"+
		"--format json prints one object per ban: ip, detector, reason, evidence, since, until, offence, dry_run.")
	cf := addCtlFlags(fs)
	format := fs.String("format", "table", "output format: table or json")
	if err := parseFlagsOnly(e, fs, args); err != nil {
		return err
	}
	if err := oneOf("format", *format, "table", "json"); err != nil {
		return err
	}
	var bans []ban.Ban
	if err := cf.call(control.Request{Cmd: control.CmdList}, &bans); err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	if *format == "json" {
		enc := json.NewEncoder(w)
		for _, b := range bans {
			if err := enc.Encode(b); err != nil {
				return err
			}
		}
		return w.Flush()
	}
	rows := make([][]string, 0, len(bans))
	for _, b := range bans {
		det := b.Detector
		if b.DryRun {
			det += " (dry run)"
		}
		rows = append(rows, []string{b.Prefix.String(), det, fmt.Sprint(b.Offence),
			b.Since.Local().Format(time.DateTime), b.Until.Local().Format(time.DateTime), b.Reason})
	}
	if err := writeTable(w, []string{"IP", "DETECTOR", "OFFENCE", "SINCE", "UNTIL", "REASON"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d active %s\n", len(bans), plural(len(bans), "ban", "bans"))
	return w.Flush()
}

func runExplain(e *env, args []string) error {
	fs := newFlagSet(e, "explain", "IP|CIDR",
		"Show why an address is (or was) banned: the ban, its evidence lines, the offence history and the ledger.")
	cf := addCtlFlags(fs)
	format := fs.String("format", "text", "output format: text or json")
	pos, err := parseFlags(e, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one IP or CIDR (see --help)")
	}
	if err := oneOf("format", *format, "text", "json"); err != nil {
		return err
	}
	if _, err := ban.ParsePrefix(pos[0]); err != nil {
		return usagef("%v", err)
	}
	var ex ban.Explanation
	if err := cf.call(control.Request{Cmd: control.CmdExplain, IP: pos[0]}, &ex); err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	if *format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ex); err != nil {
			return err
		}
		return w.Flush()
	}
	writeExplanation(w, ex)
	return w.Flush()
}

func writeExplanation(w io.Writer, ex ban.Explanation) {
	ts := func(t time.Time) string { return t.Local().Format(time.DateTime) }
	state := "not banned"
	if ex.Banned {
		state = "BANNED"
	}
	fmt.Fprintf(w, "%s: %s", ex.Prefix, state)
	if ex.Allowed {
		fmt.Fprint(w, " (allowlisted: never banned)")
	}
	fmt.Fprintln(w)
	if r := ex.Record; r != nil {
		fmt.Fprintf(w, "  detector: %s\n  reason:   %s\n  evidence: %d\n  since:    %s\n  until:    %s\n  offence:  %d\n",
			r.Detector, r.Reason, r.Evidence, ts(r.Since), ts(r.Until), r.Offence)
		if len(r.Lines) > 0 {
			fmt.Fprintln(w, "  lines:")
			for _, l := range r.Lines {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
	if b := ex.DryRun; b != nil {
		fmt.Fprintf(w, "  dry run: would be banned by %s until %s: %s\n", b.Detector, ts(b.Until), b.Reason)
	}
	for _, b := range ex.Peers {
		fmt.Fprintf(w, "  listed by %s (mirrored, no offence counted) since %s until %s: %s\n", b.Detector, ts(b.Since), ts(b.Until), b.Reason)
	}
	if h := ex.History; h != nil {
		fmt.Fprintf(w, "  history: %d %s, last %s\n", h.Offences, plural(h.Offences, "offence", "offences"), ts(h.LastBan))
	}
	if len(ex.Ledger) > 0 {
		fmt.Fprintln(w, "  ledger (newest first):")
		for _, l := range ex.Ledger {
			fmt.Fprintf(w, "    %s  %-6s %s until %s: %s\n", ts(l.At), l.Event, l.Record.Detector, ts(l.Record.Until), l.Record.Reason)
		}
	}
	if ex.Record == nil && ex.DryRun == nil && ex.History == nil && len(ex.Ledger) == 0 && len(ex.Peers) == 0 {
		fmt.Fprintln(w, "  no record of this address")
	}
}

func runStatus(e *env, args []string) error {
	fs := newFlagSet(e, "status", "", "Show the running daemon's state: uptime, followed files, rates, events, bans, actions.")
	cf := addCtlFlags(fs)
	format := fs.String("format", "text", "output format: text or json")
	if err := parseFlagsOnly(e, fs, args); err != nil {
		return err
	}
	if err := oneOf("format", *format, "text", "json"); err != nil {
		return err
	}
	var raw json.RawMessage
	if err := cf.call(control.Request{Cmd: control.CmdStatus}, &raw); err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	if *format == "json" {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return err
		}
		return w.Flush()
	}
	var st daemon.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("status reply: %w", err)
	}
	writeStatus(w, st)
	return w.Flush()
}

func writeStatus(w io.Writer, st daemon.Status) {
	cfg := st.Config
	if cfg == "" {
		cfg = "(built-in defaults)"
	}
	mode := ""
	if st.DryRun {
		mode = ", DRY RUN"
	}
	fmt.Fprintf(w, "mxguard daemon: pid %d, up %s (since %s)%s\nconfig: %s\n",
		st.PID, st.Uptime, st.Started.Local().Format(time.DateTime), mode, cfg)
	if r := st.Restore; r.State != "" {
		fmt.Fprintf(w, "restore: %s (%d bans)", r.State, r.Bans)
		if !r.Finished.IsZero() {
			fmt.Fprintf(w, " in %s", r.Finished.Sub(r.Started).Round(time.Millisecond))
		}
		if r.Error != "" {
			fmt.Fprintf(w, ": %s (retried in the background)", r.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	rows := [][]string{}
	for _, f := range st.Files {
		state := ""
		if f.Missing {
			state = "missing"
		}
		rows = append(rows, []string{f.Path, fmt.Sprint(f.Offset), fmt.Sprint(f.Size), fmt.Sprint(f.Lag),
			fmt.Sprint(f.Lines), fmt.Sprint(f.Rotations), state})
	}
	fmt.Fprintln(w, "files:")
	_ = writeTable(w, []string{"PATH", "OFFSET", "SIZE", "LAG", "LINES", "ROTATIONS", "STATE"}, rows)
	p := st.Pipeline
	fmt.Fprintf(w, "\nlines: %d (%.1f/s), events: %d, skipped: %d (not postfix %d, unrecognized %d, context %d, too long %d), tracked clients: %d\n",
		p.Lines, st.LinesPerSec, p.Events, p.Skipped(), p.NotPostfix, p.Unrecognized, p.Context, p.TooLong, p.Clients)
	if p.FutureLines > 0 {
		fmt.Fprintf(w, "future-stamped lines: %d (over %s ahead of the clock, dated now: check the clock of the log's host and tail.tz)\n",
			p.FutureLines, pipeline.FutureTolerance)
	}
	rows = rows[:0]
	for _, k := range pipeline.SortedKeys(p.Kinds) {
		rows = append(rows, []string{k, fmt.Sprint(p.Kinds[k])})
	}
	fmt.Fprintln(w, "\nevents by kind:")
	_ = writeTable(w, []string{"KIND", "EVENTS"}, rows)

	m := st.Manager
	fmt.Fprintf(w, "\nactive bans: %d", m.ActiveBans)
	if m.DryRunBans > 0 {
		fmt.Fprintf(w, " (+%d dry-run)", m.DryRunBans)
	}
	fmt.Fprintln(w)
	writePersistStatus(w, m.Persist, p)
	names := map[string]bool{}
	for k := range p.Decisions {
		names[k] = true
	}
	for k := range m.Detectors {
		names[k] = true
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rows = rows[:0]
	for _, k := range keys {
		ds := m.Detectors[k]
		rows = append(rows, []string{k, fmt.Sprint(ds.Decisions), fmt.Sprint(ds.Bans), fmt.Sprint(ds.Extended),
			fmt.Sprint(ds.Refused), fmt.Sprint(ds.Warned)})
	}
	fmt.Fprintln(w, "\ndecisions by detector:")
	_ = writeTable(w, []string{"DETECTOR", "DECISIONS", "BANS", "EXTENDED", "REFUSED", "WARNED"}, rows)
	rows = rows[:0]
	for _, a := range m.Actions {
		last := a.LastError
		if last != "" {
			last = a.LastErrorAt.Local().Format(time.DateTime) + " " + last
		}
		rows = append(rows, []string{a.Name, fmt.Sprint(a.Applied), fmt.Sprint(a.Revoked), fmt.Sprint(a.Pending),
			fmt.Sprint(a.Retrying), fmt.Sprint(a.Failures), last})
	}
	fmt.Fprintln(w, "\nactions:")
	if len(rows) == 0 {
		fmt.Fprintln(w, "  (only the block list)")
	} else {
		_ = writeTable(w, []string{"ACTION", "APPLIED", "REVOKED", "PENDING", "RETRYING", "FAILURES", "LAST ERROR"}, rows)
	}
	writePeersStatus(w, st.Peers)
	writeDNSBLStatus(w, st.DNSBL)
}

// writeDNSBLStatus is the published zone and its secondaries, when
// publish.dnsbl is on.
func writeDNSBLStatus(w io.Writer, bs *dnsbl.Stats) {
	if bs == nil {
		return
	}
	var answered uint64
	for _, n := range bs.Answers {
		answered += n
	}
	fmt.Fprintf(w, "\ndnsbl: zone %s serial %d, %d listings; %d answers (%d NXDOMAIN), %d rate-limited; transfers %d axfr, %d ixfr, %d refused, %d failed; notify %d sent, %d failed\n",
		bs.Zone, bs.Serial, bs.Listings, answered, bs.Answers["NXDOMAIN"], bs.RateLimited, bs.Transfers["axfr"], bs.Transfers["ixfr"],
		bs.TransfersRefused, bs.TransfersFailed, bs.NotifySent, bs.NotifyFailed)
	for _, sec := range bs.Secondaries {
		last := "no transfer since start"
		if !sec.LastTransfer.IsZero() {
			last = fmt.Sprintf("last transfer %s (%s, serial %d)", sec.LastTransfer.Local().Format(time.DateTime), sec.LastKind, sec.LastSerial)
		}
		fmt.Fprintf(w, "  secondary %s: %s\n", sec.Addr, last)
	}
}

// writePeersStatus is the peers' table, when peers are followed.
func writePeersStatus(w io.Writer, ps []peers.Status) {
	if len(ps) == 0 {
		return
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.Local().Format(time.DateTime)
	}
	var rows [][]string
	for _, p := range ps {
		var skipped []string
		for _, k := range slices.Sorted(maps.Keys(p.Skipped)) {
			skipped = append(skipped, fmt.Sprintf("%s %d", k, p.Skipped[k]))
		}
		last := ts(p.LastTransfer)
		if p.LastKind != "" {
			last += " (" + p.LastKind + ")"
		}
		errText := p.LastError
		if errText != "" {
			errText = ts(p.LastErrorAt) + " " + errText
		}
		rows = append(rows, []string{"peer:" + p.Name, p.Zone, fmt.Sprint(p.Serial), last, ts(p.LastCheck),
			fmt.Sprint(p.Entries), strings.Join(skipped, ", "), errText})
	}
	fmt.Fprintln(w, "\npeers:")
	_ = writeTable(w, []string{"PEER", "ZONE", "SERIAL", "LAST TRANSFER", "LAST CHECK", "MIRRORED", "SKIPPED", "LAST ERROR"}, rows)
}

// writePersistStatus says, only when it happened, that the block list
// refused writes (a full state_dir) and what is held for it.
func writePersistStatus(w io.Writer, ps ban.PersistStatus, p pipeline.Stats) {
	if ps.Failures > 0 || ps.Pending > 0 {
		fmt.Fprintf(w, "block list writes: %d bans in force waiting for the store, %d written late, %d failures, %d dropped (queue full)\n",
			ps.Pending, ps.Persisted, ps.Failures, ps.Dropped)
		if ps.LastError != "" {
			fmt.Fprintf(w, "  last error %s: %s\n", ps.LastErrorAt.Local().Format(time.DateTime), ps.LastError)
		}
	}
	if p.NotRecorded > 0 || p.HeldPaths > 0 {
		fmt.Fprintf(w, "decisions not recorded: %d; awaiting a new decision: %d; logs with their checkpoint held: %d\n",
			p.NotRecorded, p.AwaitingRedecision, p.HeldPaths)
	}
}

// writeTable renders rows in the style of `mxguard report`.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	if len(rows) == 0 {
		_, err := io.WriteString(w, "  (none)\n")
		return err
	}
	t := tablewriter.NewTable(w,
		tablewriter.WithRendition(tw.Rendition{Symbols: tw.NewSymbols(tw.StyleASCII)}),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
	)
	t.Header(header)
	for _, r := range rows {
		for i, c := range r {
			r[i] = strings.Map(func(c rune) rune {
				if c < 0x20 || c == 0x7f {
					return '?'
				}
				return c
			}, c)
		}
	}
	if err := t.Bulk(rows); err != nil {
		return err
	}
	return t.Render()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
