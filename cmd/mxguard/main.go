// Command mxguard protects Postfix servers from spam bots and abusive
// clients: it reports on mail logs, bans offenders found in them, and can
// guard the SMTP port inline. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes, as the README documents them under Commands: 0 success,
// 1 runtime failure, 2 usage or config.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command may touch: no globals, so tests can run commands
// in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	stderrIsTTY    bool
}

type command struct {
	summary string
	run     func(e *env, args []string) error
}

// usageError is a bad command line: exit 2.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func commands() map[string]command {
	return map[string]command{
		"report":  {"one-shot report over mail logs (plain, rotated, .gz, stdin)", runReport},
		"events":  {"print every recognised log line as one JSON object", runEvents},
		"replay":  {"run the detectors over old logs; print the bans that would have been made", runReplay},
		"daemon":  {"tail the logs, detect abusive clients, ban them", runDaemon},
		"guard":   {"inline SMTP guard in front of the MTA (plus the log tailer when logs are set)", runGuard},
		"config":  {"config check: validate and print the effective configuration", runConfig},
		"ban":     {"ban an address or network now (via the daemon)", runBan},
		"unban":   {"lift a ban (via the daemon)", runUnban},
		"list":    {"list active bans (via the daemon)", runList},
		"explain": {"why an address is banned: evidence, history, ledger (via the daemon)", runExplain},
		"status":  {"daemon status: files, rates, events, bans, actions", runStatus},
	}
}

func main() {
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, stderrIsTTY: isTerminal(os.Stderr)}
	os.Exit(run(e, os.Args[1:]))
}

func run(e *env, args []string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		out := e.stdout
		code := exitOK
		if len(args) == 0 {
			out, code = e.stderr, exitUsage
		}
		topUsage(out, cmds)
		return code
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "mxguard: unknown command %q\n\n", args[0])
		topUsage(e.stderr, cmds)
		return exitUsage
	}
	err := c.run(e, args[1:])
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "mxguard %s: %s\n", args[0], ue.msg)
		return exitUsage
	case errors.As(err, new(*configError)):
		fmt.Fprintf(e.stderr, "mxguard %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "mxguard %s: %v\n", args[0], err)
		return exitFailure
	}
}

// configError is a bad configuration file: exit 2.
type configError struct{ err error }

func (c *configError) Error() string { return c.err.Error() }
func (c *configError) Unwrap() error { return c.err }

func topUsage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: mxguard COMMAND [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'mxguard COMMAND --help' for a command's flags.")
}

// newFlagSet returns a FlagSet that reports errors instead of exiting;
// --help prints the command's usage to stdout.
func newFlagSet(e *env, name, argsUsage, about string) *flagSet {
	fs := flag.NewFlagSet("mxguard "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, usage: fmt.Sprintf("usage: mxguard %s [flags] %s\n\n%s\n\nflags:\n", name, argsUsage, about)}
}

// flagSet is a command's flags and its usage text.
type flagSet struct {
	*flag.FlagSet
	usage string
}

// parseFlags parses flags anywhere among the arguments (`report f.log
// --format json` works as well as the usual order) and returns the
// positional arguments. "--" ends flag parsing.
func parseFlags(e *env, fs *flagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(e.stdout)
				fmt.Fprint(e.stdout, fs.usage)
				fs.PrintDefaults()
				return nil, flag.ErrHelp
			}
			return nil, usagef("%v (see --help)", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first positional argument or after "--".
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseFlagsOnly is parseFlags for commands that take no arguments.
func parseFlagsOnly(e *env, fs *flagSet, args []string) error {
	rest, err := parseFlags(e, fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("unexpected argument %q", rest[0])
	}
	return nil
}

// oneOf checks a flag value against its allowed values.
func oneOf(flagName, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return usagef("--%s %q: want one of %s", flagName, v, strings.Join(allowed, ", "))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
