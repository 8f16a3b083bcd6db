// Command mxgen writes a deterministic, realistic Postfix mail log to
// standard output, for tests and benchmarks:
//
//	mxgen -lines 1000000 -seed 1 -format bsd > mail.log
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mxguard/mxguard/internal/loggen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lines := fs.Int("lines", 100000, "number of lines to write")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same output)")
	format := fs.String("format", "bsd", "time stamp format: bsd (Debian syslog), rfc3339 (rsyslog high precision) or maillog (Postfix maillog_file)")
	host := fs.String("host", "mx1", "syslog host name")
	start := fs.String("start", "", "time of the first line, RFC 3339 (default 2025-11-29T20:00:00+01:00)")
	qids := fs.String("queue-ids", "mixed", "queue id format: mixed, short or long")
	stats := fs.Bool("stats", false, "print line counts to stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mxgen [flags] > FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxgen: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg := loggen.Config{Lines: *lines, Seed: *seed, Host: *host}
	var err error
	if cfg.Format, err = loggen.ParseFormat(*format); err != nil {
		fmt.Fprintln(stderr, "mxgen:", err)
		return 2
	}
	switch *qids {
	case "mixed":
		cfg.QueueIDs = loggen.QueueIDMixed
	case "short":
		cfg.QueueIDs = loggen.QueueIDShort
	case "long":
		cfg.QueueIDs = loggen.QueueIDLong
	default:
		fmt.Fprintf(stderr, "mxgen: -queue-ids: unknown style %q (want mixed, short or long)\n", *qids)
		return 2
	}
	if *start != "" {
		if cfg.Start, err = time.Parse(time.RFC3339, *start); err != nil {
			fmt.Fprintf(stderr, "mxgen: -start: %v\n", err)
			return 2
		}
	}
	if *lines <= 0 {
		fmt.Fprintln(stderr, "mxgen: -lines must be positive")
		return 2
	}
	t0 := time.Now()
	st, err := loggen.Generate(stdout, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "mxgen:", err)
		return 1
	}
	if *stats {
		fmt.Fprintf(stderr, "mxgen: %d lines (%d postfix, %d evidence = %.1f%%), %d bytes, %s .. %s, in %s\n",
			st.Lines, st.Postfix, st.Evidence, 100*float64(st.Evidence)/float64(st.Lines), st.Bytes,
			st.First.Format(time.RFC3339), st.Last.Format(time.RFC3339), time.Since(t0).Round(time.Millisecond))
	}
	return 0
}
