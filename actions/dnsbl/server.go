package dnsbl

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/actions/ban"
)

// ednsSize is the UDP payload size we offer (DNS flag day 2020).
const ednsSize = 1232

// ServeDNS implements dns.Handler.
func (p *Publisher) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	client := addrOf(w.RemoteAddr())
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = false
	signed := false
	if t := r.IsTsig(); t != nil {
		if err := w.TsigStatus(); err != nil {
			p.log.Debug("request with a TSIG that does not verify", "client", client, "key", t.Hdr.Name, "err", err)
			// RFC 8945 5.2: an unverifiable request gets NOTAUTH, unsigned.
			m.Authoritative = false
			m.Rcode = dns.RcodeNotAuth
			p.stats.countAnswer(m.Rcode)
			_ = w.WriteMsg(m)
			return
		}
		signed = true
	}
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		m.Rcode = dns.RcodeRefused
		if len(r.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
		}
		m.Authoritative = false
		p.write(w, r, m, signed, udp)
		return
	}
	q := r.Question[0]
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		p.transfer(w, r, m, client, signed, udp)
		return
	}
	if p.limiter != nil && !p.allowed[client] && !p.limiter.allow(client, time.Now()) {
		if udp {
			p.stats.rateDropped.Add(1)
			return // dropped: a spoofed source gets no amplification
		}
		m.Rcode = dns.RcodeRefused
		p.write(w, r, m, signed, udp)
		return
	}
	p.answer(m, q, p.now())
	p.write(w, r, m, signed, udp)
}

// write adds EDNS and TSIG as the request had them, truncates for UDP and
// sends.
func (p *Publisher) write(w dns.ResponseWriter, r, m *dns.Msg, signed, udp bool) {
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		if opt.Version() != 0 {
			m.Answer, m.Ns, m.Extra = nil, nil, nil
			m.SetEdns0(ednsSize, false)
			m.Rcode = dns.RcodeBadVers // packed into the OPT record's upper bits
			p.stats.countAnswer(m.Rcode)
			_ = w.WriteMsg(m)
			return
		}
		size = max(min(int(opt.UDPSize()), ednsSize), dns.MinMsgSize)
		m.SetEdns0(ednsSize, false)
	}
	if udp {
		m.Truncate(size)
	}
	if signed {
		t := r.IsTsig()
		m.SetTsig(t.Hdr.Name, t.Algorithm, t.Fudge, time.Now().Unix())
	}
	p.stats.countAnswer(m.Rcode)
	_ = w.WriteMsg(m)
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// answer fills m for a query of q at now.
func (p *Publisher) answer(m *dns.Msg, q dns.Question, now time.Time) {
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode, m.Authoritative = dns.RcodeRefused, false
		return
	}
	if name != p.zone && !strings.HasSuffix(name, "."+p.zone) {
		m.Rcode, m.Authoritative = dns.RcodeRefused, false
		return
	}
	p.mu.RLock()
	serial := p.serial
	p.mu.RUnlock()
	negative := func(rcode int) {
		m.Rcode = rcode
		s := p.soaRR(serial)
		s.Hdr.Ttl = min(s.Hdr.Ttl, s.Minttl) // RFC 2308
		m.Ns = []dns.RR{s}
	}
	if name == p.zone {
		switch q.Qtype {
		case dns.TypeSOA:
			m.Answer = []dns.RR{p.soaRR(serial)}
		case dns.TypeNS:
			ns := p.ns
			m.Answer = []dns.RR{&ns}
		case dns.TypeANY:
			ns := p.ns
			m.Answer = []dns.RR{p.soaRR(serial), &ns}
		default:
			negative(dns.RcodeSuccess)
		}
		return
	}
	pr, full, ok := ParseQueryName(name, p.zone)
	if !ok {
		if p.isPlaceholder(name) {
			txt := &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: p.ttl},
				Txt: []string{placeholderText}}
			switch q.Qtype {
			case dns.TypeTXT, dns.TypeANY:
				m.Answer = []dns.RR{txt}
			default:
				negative(dns.RcodeSuccess)
			}
			return
		}
		negative(dns.RcodeNameError)
		return
	}
	b, listed, exists := p.lookup(pr, full, now)
	switch {
	case listed:
		rrs := p.rrsAt(q.Name, b)
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = rrs[:1]
		case dns.TypeTXT:
			m.Answer = rrs[1:]
		case dns.TypeANY:
			m.Answer = rrs
		default:
			negative(dns.RcodeSuccess)
		}
	case exists:
		negative(dns.RcodeSuccess) // a name between the apex and a listing
	default:
		negative(dns.RcodeNameError)
	}
}

// lookup answers for the name of pr: the listing it has (listed), or
// whether the name exists without one (a node above listings: NODATA,
// not NXDOMAIN, so that resolvers minimising query names walk on).
func (p *Publisher) lookup(pr netip.Prefix, full bool, now time.Time) (b ban.Ban, listed, exists bool) {
	if pr.Addr().Is4In6() {
		return ban.Ban{}, false, false // IPv4 is asked by its own name
	}
	if full {
		b, ok := p.index.Lookup(pr.Addr(), now)
		if !ok && pr.Addr().Is4() {
			exists = p.v6Below(pr)
		}
		return b, ok, ok || exists
	}
	reg, inRegion := p.regionOf(pr)
	if !inRegion {
		// Above every region no ban can cover the whole name: it exists
		// if anything is listed below it; saying NODATA is harmless.
		return ban.Ban{}, false, true
	}
	p.mu.RLock()
	bans := p.regions[reg] // copied on write by applyLocked
	p.mu.RUnlock()
	if nodeExists(bans, pr) || spelledOut(bans, pr, reg.Bits()) {
		return ban.Ban{}, false, true
	}
	if b, ok := longestCovering(bans, pr); ok && b.Until.After(now) {
		return b, true, true
	}
	return ban.Ban{}, false, p.v6Below(pr)
}

// v6Below reports whether the name of IPv4 prefix pr, read as IPv6
// nibbles (1.0.0.2 is 2.0.0.1 and 2001::/16), has IPv6 listings below
// it: then it exists in the transferred zone (an empty non-terminal).
func (p *Publisher) v6Below(pr netip.Prefix) bool {
	k, ok := v6PathOf(pr)
	if !ok {
		return false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.v6Paths[k] > 0
}

// v6PathOf is the IPv6 prefix whose nibble name is the name of IPv4
// prefix pr, if every label of that name is a single digit.
func v6PathOf(pr netip.Prefix) (netip.Prefix, bool) {
	if !sharedWithIPv6(pr) || pr.Bits() == 0 {
		return netip.Prefix{}, false
	}
	o := pr.Addr().As4()
	var a [16]byte
	for i := 0; i < pr.Bits()/8; i++ {
		a[i/2] |= o[i] << (4 * (1 - i%2))
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), pr.Bits()/2), true
}

// isPlaceholder reports whether name (lower case) is a placeholder name
// of the rendered zone (see placeholders).
func (p *Publisher) isPlaceholder(name string) bool {
	rest, ok := strings.CutPrefix(name, placeholderLabel+".")
	if !ok || len(rest) < 2 || rest[0] < 'a' || rest[0] > 'f' || rest[1] != '.' {
		return false
	}
	parent := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if rest[2:] != p.zone {
		pr, full, ok := ParseQueryName(rest[2:], p.zone)
		if !ok || full || !pr.Addr().Is4() {
			return false
		}
		parent = pr
	}
	reg, inRegion := p.regionOf(parent)
	if !inRegion || !sharedWithIPv6(parent) {
		return false
	}
	_, ok = p.placeholdersOf(reg)[parent]
	return ok
}

// placeholdersOf returns the prefixes of region reg with placeholder
// names below them: rendered once after each change of the region, not
// once per query.
func (p *Publisher) placeholdersOf(reg netip.Prefix) map[netip.Prefix]struct{} {
	// the read lock keeps applyLocked from changing the region (and
	// dropping its entry) between rendering and caching
	p.mu.RLock()
	defer p.mu.RUnlock()
	p.phMu.Lock()
	nodes, cached := p.placeholderNodes[reg]
	p.phMu.Unlock()
	if cached {
		return nodes
	}
	for _, rec := range renderRegion(p.regions[reg], reg.Bits()) {
		if rec.placeholder {
			if nodes == nil {
				nodes = map[netip.Prefix]struct{}{}
			}
			nodes[rec.node] = struct{}{}
		}
	}
	p.phMu.Lock()
	p.placeholderNodes[reg] = nodes
	p.phMu.Unlock()
	return nodes
}

// transfer answers AXFR and IXFR: only to a configured secondary whose
// request carries the configured TSIG key.
func (p *Publisher) transfer(w dns.ResponseWriter, r, m *dns.Msg, client netip.Addr, signed, udp bool) {
	q := r.Question[0]
	refuse := func(rcode int) {
		m.Rcode, m.Authoritative = rcode, false
		p.write(w, r, m, signed, udp)
	}
	if !strings.EqualFold(q.Name, p.zone) {
		refuse(dns.RcodeNotAuth)
		return
	}
	if !p.allowed[client] || !signed || p.tsigKey == nil {
		p.refusal.Warn("transfer", "zone transfer refused", "client", client, "signed", signed)
		p.stats.xfrRefused.Add(1)
		refuse(dns.RcodeRefused)
		return
	}
	var clientSerial uint32
	ixfr := false
	if q.Qtype == dns.TypeIXFR {
		for _, rr := range r.Ns {
			if s, ok := rr.(*dns.SOA); ok {
				clientSerial, ixfr = s.Serial, true
			}
		}
	}
	cur := p.Serial()
	if ixfr && !serialLess(clientSerial, cur) {
		m.Answer = []dns.RR{p.soaRR(cur)} // up to date
		p.write(w, r, m, signed, udp)
		p.stats.countTransfer(client, true, cur, time.Now())
		return
	}
	if udp {
		m.Truncated = true // IXFR over UDP: ask for TCP
		p.write(w, r, m, signed, udp)
		return
	}
	var rrs func(emit func(dns.RR) bool) uint32
	if ixfr {
		rrs = p.ixfrRecords(clientSerial)
	}
	kind := "IXFR"
	if rrs == nil {
		rrs = p.axfrRecords()
		kind = "AXFR"
	}
	start := time.Now()
	n, bytes, serial, err := p.stream(w, r, rrs)
	if err != nil {
		p.stats.xfrFailed.Add(1)
		p.log.Warn("zone transfer failed", "client", client, "kind", kind, "err", err)
		return
	}
	p.stats.countTransfer(client, kind == "IXFR", serial, time.Now())
	p.log.Info("zone transfer", "client", client, "kind", kind, "from_serial", clientSerial, "records", n,
		"bytes", bytes, "took", time.Since(start).Round(time.Millisecond))
}

// serialLess compares serials in RFC 1982 arithmetic.
func serialLess(a, b uint32) bool { return a != b && int32(b-a) > 0 }

// axfrRecords is the whole zone: SOA, NS, the listings, SOA. The zone is
// read under the lock at once (consistent with its serial), rendered
// outside it.
func (p *Publisher) axfrRecords() func(emit func(dns.RR) bool) uint32 {
	p.mu.RLock()
	serial := p.serial
	regions := make([][]ban.Ban, 0, len(p.regions))
	widths := make([]int, 0, len(p.regions))
	for r, m := range p.regions {
		regions = append(regions, m) // copied on write by applyLocked
		widths = append(widths, r.Bits())
	}
	p.mu.RUnlock()
	return func(emit func(dns.RR) bool) uint32 {
		soa := p.soaRR(serial)
		ns := p.ns
		if !emit(soa) || !emit(&ns) {
			return serial
		}
		for i, bans := range regions {
			for _, rec := range renderRegion(bans, widths[i]) {
				for _, rr := range p.recordRRs(rec) {
					if !emit(rr) {
						return serial
					}
				}
			}
		}
		emit(soa)
		return serial
	}
}

// ixfrRecords is the incremental transfer from serial from, or nil when
// the journal does not reach back to it.
func (p *Publisher) ixfrRecords(from uint32) func(emit func(dns.RR) bool) uint32 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	start := -1
	for i, e := range p.journal {
		if e.from == from {
			start = i
			break
		}
	}
	if start < 0 || p.journal[len(p.journal)-1].to != p.serial {
		return nil
	}
	steps := append([]journalEntry(nil), p.journal[start:]...)
	serial := p.serial
	return func(emit func(dns.RR) bool) uint32 {
		cur := p.soaRR(serial)
		if !emit(cur) {
			return serial
		}
		for _, e := range steps {
			if !emit(p.soaRR(e.from)) {
				return serial
			}
			for _, rr := range e.del {
				if !emit(rr) {
					return serial
				}
			}
			if !emit(p.soaRR(e.to)) {
				return serial
			}
			for _, rr := range e.add {
				if !emit(rr) {
					return serial
				}
			}
		}
		emit(cur)
		return serial
	}
}

// maxXfrMsg keeps transfer messages below the 64 KiB TCP limit with room
// for the TSIG record.
const maxXfrMsg = 60000

// stream sends the records in messages of at most maxXfrMsg bytes, each
// signed (TSIG over the whole stream, RFC 8945 5.3.1).
func (p *Publisher) stream(w dns.ResponseWriter, r *dns.Msg, records func(emit func(dns.RR) bool) uint32) (n, bytes int, serial uint32, err error) {
	t := r.IsTsig()
	var batch []dns.RR
	size := 0
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		m.Compress = true
		m.Answer = batch
		if t != nil {
			m.SetTsig(t.Hdr.Name, t.Algorithm, t.Fudge, time.Now().Unix())
		}
		bytes += m.Len()
		if err = w.WriteMsg(m); err != nil {
			return false
		}
		w.TsigTimersOnly(true)
		n += len(batch)
		batch, size = batch[:0:0], 0
		return true
	}
	serial = records(func(rr dns.RR) bool {
		l := dns.Len(rr)
		if size+l > maxXfrMsg && !flush() {
			return false
		}
		batch = append(batch, rr)
		size += l
		return true
	})
	if err == nil {
		flush()
	}
	return n, bytes, serial, err
}

// notify tells one secondary the zone changed (RFC 1996), signed with the
// TSIG key; a few tries, as UDP may lose it.
func (p *Publisher) notify(ctx context.Context, s secondary, serial uint32) {
	m := new(dns.Msg)
	m.SetNotify(p.zone)
	m.Answer = []dns.RR{p.soaRR(serial)}
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if p.tsigKey != nil {
		c.TsigSecret = p.tsigKey
		m.SetTsig(p.cfg.TSIG.FQDN(), dns.HmacSHA256, 300, time.Now().Unix())
	}
	var err error
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		var resp *dns.Msg
		resp, _, err = c.ExchangeContext(ctx, m, s.notify)
		if err == nil && resp.Rcode == dns.RcodeSuccess {
			p.stats.notifySent.Add(1)
			p.log.Debug("notify sent", "secondary", s.notify, "serial", serial)
			return
		}
		if err == nil {
			p.stats.notifyFailed.Add(1)
			p.log.Warn("notify answered with an error", "secondary", s.notify, "rcode", dns.RcodeToString[resp.Rcode])
			return
		}
	}
	if ctx.Err() == nil {
		p.stats.notifyFailed.Add(1)
		p.log.Warn("notify failed", "secondary", s.notify, "serial", serial, "err", err)
	}
}
