package firewall

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mxguard/mxguard/actions/command"
)

// iptablesMemory is an in-memory firewall with the iptablesBackend
// methods. It serves --dry-run (every change is printed as the iptables
// command that would have run) and unit tests that need no root.
type iptablesMemory struct {
	mu     sync.Mutex
	prog   string
	w      io.Writer // nil: print nothing
	chains map[string][]string
	calls  int // every method call, for tests
	// restores counts Restore calls; ruleCalls counts single-rule changes
	// (Insert, Append, Delete) outside Restore. Tests use both to check
	// that a Sync is one bulk load.
	restores, ruleCalls int
	// restoreCmd is the restore program and its arguments, for printing.
	restoreCmd []string
	// fail, when set, makes a mutating call fail if it returns an error.
	fail func(op string, chain string, spec []string) error
}

func newIPTablesXMemory(prog string, w io.Writer, restoreCmd []string) *iptablesMemory {
	return &iptablesMemory{prog: prog, w: w, restoreCmd: restoreCmd, chains: map[string][]string{
		"filter/INPUT": nil, "filter/FORWARD": nil, "filter/OUTPUT": nil,
	}}
}

func (m *iptablesMemory) print(args ...string) {
	if m.w != nil {
		fmt.Fprintln(m.w, command.Quote(m.prog, args))
	}
}

func (m *iptablesMemory) check(op, chain string, spec []string) error {
	if m.fail != nil {
		return m.fail(op, chain, spec)
	}
	return nil
}

func (m *iptablesMemory) Exists(table, chain string, spec ...string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	return slices.Contains(m.chains[table+"/"+chain], strings.Join(spec, " ")), nil
}

func (m *iptablesMemory) Insert(table, chain string, pos int, spec ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.ruleCalls++
	k := table + "/" + chain
	rules, ok := m.chains[k]
	if !ok {
		return fmt.Errorf("%s: chain %s does not exist", m.prog, chain)
	}
	if err := m.check("-I", chain, spec); err != nil {
		return err
	}
	pos = min(max(pos-1, 0), len(rules))
	m.chains[k] = slices.Insert(rules, pos, strings.Join(spec, " "))
	m.print(append([]string{"-t", table, "-I", chain, strconv.Itoa(pos + 1)}, spec...)...)
	return nil
}

func (m *iptablesMemory) Append(table, chain string, spec ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.ruleCalls++
	k := table + "/" + chain
	if _, ok := m.chains[k]; !ok {
		return fmt.Errorf("%s: chain %s does not exist", m.prog, chain)
	}
	if err := m.check("-A", chain, spec); err != nil {
		return err
	}
	m.chains[k] = append(m.chains[k], strings.Join(spec, " "))
	m.print(append([]string{"-t", table, "-A", chain}, spec...)...)
	return nil
}

func (m *iptablesMemory) Delete(table, chain string, spec ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.ruleCalls++
	k := table + "/" + chain
	i := slices.Index(m.chains[k], strings.Join(spec, " "))
	if i < 0 {
		return fmt.Errorf("%s: bad rule (does a matching rule exist in that chain?)", m.prog)
	}
	if err := m.check("-D", chain, spec); err != nil {
		return err
	}
	m.chains[k] = slices.Delete(m.chains[k], i, i+1)
	m.print(append([]string{"-t", table, "-D", chain}, spec...)...)
	return nil
}

func (m *iptablesMemory) List(table, chain string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	rules, ok := m.chains[table+"/"+chain]
	if !ok {
		return nil, fmt.Errorf("%s: chain %s does not exist", m.prog, chain)
	}
	// Like `iptables -S CHAIN`, with a warning line thrown in to make sure
	// callers do not choke on one.
	out := []string{"# Warning: iptables-legacy tables present, use iptables-legacy to see them", "-N " + chain}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, nil
}

func (m *iptablesMemory) ChainExists(table, chain string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	_, ok := m.chains[table+"/"+chain]
	return ok, nil
}

func (m *iptablesMemory) NewChain(table, chain string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	k := table + "/" + chain
	if _, ok := m.chains[k]; ok {
		return fmt.Errorf("%s: chain already exists", m.prog)
	}
	m.chains[k] = nil
	m.print("-t", table, "-N", chain)
	return nil
}

func (m *iptablesMemory) ClearAndDeleteChain(table, chain string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	k := table + "/" + chain
	if _, ok := m.chains[k]; !ok {
		return nil
	}
	delete(m.chains, k)
	m.print("-t", table, "-F", chain)
	m.print("-t", table, "-X", chain)
	return nil
}

// builtinChains are the filter table's own chains: a restore never
// flushes them.
var builtinChains = []string{"INPUT", "FORWARD", "OUTPUT"}

// Restore applies an `iptables-restore --noflush` input the way the real
// program does, all or nothing: ":CHAIN" creates a user chain or flushes
// it if it exists, "-N" creates one (failing if it exists), "-A", "-I"
// and "-D" change rules, "COMMIT" ends the table. Other lines fail.
func (m *iptablesMemory) Restore(ctx context.Context, input []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.restores++
	if m.w != nil {
		p := &command.Printer{W: m.w}
		if _, err := p.Run(ctx, input, m.restoreCmd[0], m.restoreCmd[1:]...); err != nil {
			return err
		}
	}
	chains := maps.Clone(m.chains)
	table := ""
	fail := func(n int, format string, args ...any) error {
		return fmt.Errorf("%s: line %d failed: %s", m.restoreCmd[0], n, fmt.Sprintf(format, args...))
	}
	sc := bufio.NewScanner(bytes.NewReader(input))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case line == "COMMIT":
			table = ""
		case table == "":
			return fail(n, "outside a table: %q", line)
		case strings.HasPrefix(line, ":"):
			name := f[0][1:]
			if !slices.Contains(builtinChains, name) {
				chains[table+"/"+name] = nil // created, or flushed if it exists
			}
		case len(f) == 2 && f[0] == "-N":
			if _, ok := chains[table+"/"+f[1]]; ok {
				return fail(n, "Chain already exists")
			}
			chains[table+"/"+f[1]] = nil
		case len(f) >= 3 && (f[0] == "-A" || f[0] == "-I" || f[0] == "-D"):
			k := table + "/" + f[1]
			rules, ok := chains[k]
			if !ok {
				return fail(n, "chain %s does not exist", f[1])
			}
			spec := f[2:]
			pos := 0
			if f[0] == "-I" {
				if i, err := strconv.Atoi(spec[0]); err == nil {
					pos, spec = i-1, spec[1:]
				}
			}
			if err := m.check(f[0], f[1], spec); err != nil {
				return fail(n, "%v", err)
			}
			rule := strings.Join(spec, " ")
			switch f[0] {
			case "-A":
				chains[k] = append(slices.Clone(rules), rule)
			case "-I":
				chains[k] = slices.Insert(slices.Clone(rules), min(max(pos, 0), len(rules)), rule)
			case "-D":
				i := slices.Index(rules, rule)
				if i < 0 {
					return fail(n, "bad rule (does a matching rule exist in that chain?)")
				}
				chains[k] = slices.Delete(slices.Clone(rules), i, i+1)
			}
		default:
			return fail(n, "unsupported %q", line)
		}
	}
	if table != "" {
		return fail(n, "COMMIT expected at the end")
	}
	m.chains = chains
	return nil
}

// rules returns a copy of a chain (tests).
func (m *iptablesMemory) rules(table, chain string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.chains[table+"/"+chain])
}
