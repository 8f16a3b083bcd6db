package firewall

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// nftBatch is one netlink transaction (all or nothing in the kernel).
// In dry-run it renders the same operations as an `nft -f -` script
// instead, which is also how they read in the documentation.
type nftBatch struct {
	a    *NFTables
	text *strings.Builder // dry-run only
	ops  int
	err  error // from building a message
}

func (a *NFTables) batch() *nftBatch {
	b := &nftBatch{a: a}
	if a.conn == nil {
		b.text = &strings.Builder{}
	}
	return b
}

func (b *nftBatch) line(format string, args ...any) {
	b.ops++
	if b.text != nil {
		fmt.Fprintf(b.text, format+"\n", args...)
	}
}

func (b *nftBatch) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// run sends the transaction (or prints it). An empty batch does nothing.
func (b *nftBatch) run() error {
	if b.ops == 0 {
		return nil
	}
	if b.err != nil {
		return b.err
	}
	if b.text != nil {
		_, err := fmt.Fprintf(b.a.dry, "nft -f - <<'EOF'\n%sEOF\n", b.text.String())
		return err
	}
	return b.a.conn.Flush()
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return "inet"
}

func tableRef(t *nftables.Table) string { return familyName(t.Family) + " " + t.Name }

func (b *nftBatch) addTable(t *nftables.Table) {
	b.line("add table %s", tableRef(t))
	if b.text == nil {
		b.a.conn.AddTable(t)
	}
}

func (b *nftBatch) delTable(t *nftables.Table) {
	b.line("delete table %s", tableRef(t))
	if b.text == nil {
		b.a.conn.DelTable(t)
	}
}

func (b *nftBatch) newID() uint32 {
	b.a.nextID++
	return b.a.nextID
}

func (b *nftBatch) addSet(s *nftables.Set) {
	// Our own IDs: the library's fallback counter is shared by every
	// connection in the process.
	s.ID = b.newID()
	b.line("add set %s %s { type %s; flags interval, timeout; }", tableRef(s.Table), s.Name, s.KeyType.Name)
	if b.text == nil {
		b.fail(b.a.conn.AddSet(s, nil))
	}
}

func (b *nftBatch) delSet(s *nftables.Set) {
	b.line("delete set %s %s", tableRef(s.Table), s.Name)
	if b.text == nil {
		b.a.conn.DelSet(s)
	}
}

func (b *nftBatch) addChain(c *nftables.Chain) {
	b.line("add chain %s %s { type filter hook input priority %d; policy accept; }", tableRef(c.Table), c.Name, *c.Priority)
	if b.text == nil {
		b.a.conn.AddChain(c)
	}
}

func (b *nftBatch) flushChain(c *nftables.Chain) {
	b.line("flush chain %s %s", tableRef(c.Table), c.Name)
	if b.text == nil {
		b.a.conn.FlushChain(c)
	}
}

func (b *nftBatch) delChain(c *nftables.Chain) {
	b.line("delete chain %s %s", tableRef(c.Table), c.Name)
	if b.text == nil {
		b.a.conn.DelChain(c)
	}
}

func (b *nftBatch) flushSet(f *nftFamily) {
	b.line("flush set %s %s", tableRef(f.set.Table), f.set.Name)
	if b.text == nil {
		b.a.conn.FlushSet(f.set)
	}
}

func (b *nftBatch) addElems(f *nftFamily, ivs []nftInterval, now time.Time) {
	if len(ivs) == 0 {
		return
	}
	if b.text != nil {
		for _, iv := range ivs {
			to := ""
			if d, ok := timeoutAt(iv.until, now); ok && d > 0 && f.set.HasTimeout {
				to = " timeout " + nftDuration(d)
			}
			b.line("add element %s %s { %s%s comment %q }", tableRef(f.set.Table), f.set.Name, iv, to, nftElemComment)
		}
		return
	}
	perMsg, _ := b.a.limits(f)
	for part := range slices.Chunk(ivs, perMsg) {
		b.ops++
		b.fail(b.a.conn.SetAddElements(f.set, setElements(part, f.set.HasTimeout, now)))
	}
}

func (b *nftBatch) delElems(f *nftFamily, ivs []nftInterval) {
	if len(ivs) == 0 {
		return
	}
	if b.text != nil {
		for _, iv := range ivs {
			b.line("delete element %s %s { %s }", tableRef(f.set.Table), f.set.Name, iv)
		}
		return
	}
	perMsg, _ := b.a.limits(f)
	for part := range slices.Chunk(ivs, perMsg) {
		b.ops++
		b.fail(b.a.conn.SetDeleteElements(f.set, delElements(part)))
	}
}

// nftDuration renders a timeout as nft reads it.
func nftDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// ruleText is the rule for one address family as nft prints it.
func (a *NFTables) ruleText(f *nftFamily) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s saddr @%s ", f.name, f.set.Name)
	switch len(a.cfg.Ports) {
	case 0:
		s.WriteString("meta l4proto tcp")
	case 1:
		fmt.Fprintf(&s, "tcp dport %d", a.cfg.Ports[0])
	default:
		ps := make([]string, len(a.cfg.Ports))
		for i, p := range a.cfg.Ports {
			ps[i] = strconv.Itoa(p)
		}
		fmt.Fprintf(&s, "tcp dport { %s }", strings.Join(ps, ", "))
	}
	if a.cfg.Target == "REJECT" {
		s.WriteString(" counter reject with tcp reset")
	} else {
		s.WriteString(" counter drop")
	}
	return s.String()
}

// ruleTag is the rule's comment. It carries the rule text (or its hash
// when long), so Sync sees a rule that no longer matches the config.
func ruleTag(text string) string {
	tag := "mxguard: " + text
	if len(tag) > 128 { // nft's comment limit
		h := fnv.New32a()
		h.Write([]byte(text))
		tag = fmt.Sprintf("mxguard: rule %08x", h.Sum32())
	}
	return tag
}

func (a *NFTables) ruleTags() []string {
	var out []string
	for _, f := range a.fams {
		if f != nil {
			out = append(out, ruleTag(a.ruleText(f)))
		}
	}
	return out
}

// addRules adds one rule per address family to our chain:
// `ip saddr @set tcp dport {ports} counter drop` (or reject with tcp reset).
func (a *NFTables) addRules(b *nftBatch) {
	for _, f := range a.fams {
		if f == nil {
			continue
		}
		text := a.ruleText(f)
		tag := ruleTag(text)
		b.line("add rule %s %s %s comment %q", tableRef(a.table), a.chain.Name, text, tag)
		if b.text != nil {
			continue
		}
		proto, off, size := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
		if !f.is4 {
			proto, off, size = unix.NFPROTO_IPV6, 8, 16
		}
		exprs := []expr.Any{
			// An inet table sees both families: match ours before
			// reading the source address at its offset.
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: f.set.Name, SetID: f.set.ID},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}
		port := func(p int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(p)) }
		switch len(a.cfg.Ports) {
		case 0:
		case 1:
			exprs = append(exprs,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(a.cfg.Ports[0])})
		default:
			ports := &nftables.Set{Table: a.table, Name: "__set%d", Anonymous: true, Constant: true,
				KeyType: nftables.TypeInetService, ID: b.newID()}
			elems := make([]nftables.SetElement, len(a.cfg.Ports))
			for i, p := range a.cfg.Ports {
				elems[i] = nftables.SetElement{Key: port(p)}
			}
			b.fail(b.a.conn.AddSet(ports, elems))
			exprs = append(exprs,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID})
		}
		exprs = append(exprs, &expr.Counter{})
		if a.cfg.Target == "REJECT" {
			exprs = append(exprs, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
		} else {
			exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictDrop})
		}
		b.a.conn.AddRule(&nftables.Rule{Table: a.table, Chain: a.chain, Exprs: exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, tag)})
	}
}
