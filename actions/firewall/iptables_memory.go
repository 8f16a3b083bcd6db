package firewall

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mxguard/mxguard/actions/command"
)

// iptablesXMemory is an in-memory firewall with the iptablesXBackend
// methods. It serves --dry-run (every change is printed as the iptables
// command that would have run) and unit tests that need no root.
type iptablesXMemory struct {
	mu     sync.Mutex
	prog   string
	w      io.Writer // nil: print nothing
	chains map[string][]string
	calls  int // every method call, for tests
	// fail, when set, makes a mutating call fail if it returns an error.
	fail func(op string, chain string, spec []string) error
}

func newIPTablesXMemory(prog string, w io.Writer) *iptablesXMemory {
	return &iptablesXMemory{prog: prog, w: w, chains: map[string][]string{
		"filter/INPUT": nil, "filter/FORWARD": nil, "filter/OUTPUT": nil,
	}}
}

func (m *iptablesXMemory) print(args ...string) {
	if m.w != nil {
		fmt.Fprintln(m.w, command.Quote(m.prog, args))
	}
}

func (m *iptablesXMemory) check(op, chain string, spec []string) error {
	if m.fail != nil {
		return m.fail(op, chain, spec)
	}
	return nil
}

func (m *iptablesXMemory) Exists(table, chain string, spec ...string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	return slices.Contains(m.chains[table+"/"+chain], strings.Join(spec, " ")), nil
}

func (m *iptablesXMemory) Insert(table, chain string, pos int, spec ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
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

func (m *iptablesXMemory) Append(table, chain string, spec ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
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

func (m *iptablesXMemory) Delete(table, chain string, spec ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
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

func (m *iptablesXMemory) List(table, chain string) ([]string, error) {
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

func (m *iptablesXMemory) ChainExists(table, chain string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	_, ok := m.chains[table+"/"+chain]
	return ok, nil
}

func (m *iptablesXMemory) NewChain(table, chain string) error {
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

func (m *iptablesXMemory) ClearAndDeleteChain(table, chain string) error {
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

// rules returns a copy of a chain (tests).
func (m *iptablesXMemory) rules(table, chain string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.chains[table+"/"+chain])
}
