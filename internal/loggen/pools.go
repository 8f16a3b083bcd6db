package loggen

import (
	"math"
	"net/netip"
	"strconv"
)

// client is one SMTP client the generator can make appear in the log.
type client struct {
	ip   string // textual address (IPv4 or IPv6)
	name string // reverse name as smtpd logs it, "unknown" when there is none
	ptr  string // a PTR name that does not resolve back (logged as a warning), or ""
	helo string
	v6   bool
	// attack is the abuse a repeat offender prefers; zero for good clients.
	attack scenario
}

// Word lists. They only need to look plausible; all domains are reserved
// (example.*, .example, .test) or well-known providers used as text only.
var (
	localDomain = "example.com"
	localUsers  = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
		"ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent",
		"victor", "walter", "postmaster", "info", "sales", "support", "billing", "office"}
	// guesses a dictionary attack tries; none of them exists.
	guessUsers = []string{"admin", "test", "webmaster", "root", "contact", "john", "mike",
		"john.smith", "m.jones", "david", "michael", "sarah", "jobs", "hr", "marketing",
		"noreply", "newsletter", "accounts", "service", "user", "guest", "backup", "oracle",
		"ftp", "abuse2", "helpdesk", "team", "ceo", "finance", "shop", "mail", "web"}
	remoteDomains = []string{"example.net", "example.org", "mailhost.example", "news.example",
		"bank.example", "shop.example", "travel.example", "university.example", "city.example",
		"gmail.com", "outlook.com", "yahoo.com", "web.de", "gmx.net", "orange.fr", "mail.ru"}
	namePrefixes = []string{"mail", "mx", "smtp", "out", "mta", "relay", "o", "mail-out", "smtp-out", "bounce"}
	spamDomains  = []string{"promo-deals.example", "cheap-meds.test", "bestprice.example",
		"crypto-win.test", "loan4u.example", "dating-now.test", "winner.example", "seo-boost.test"}
	spamLocals = []string{"info", "sales", "newsletter", "offer", "support", "admin", "noreply",
		"bounce", "x8f2k", "mkt", "promo", "hello", "contact", "service"}
	spamHelos = []string{"friend", "User", "localhost", "WIN-3K9F7Q2B1", "ylmf-pc", "EHLO",
		"unknown", "win7", "mail", "PC", "home", "desktop-8h2k1", "ADMIN", "test"}
	forgedHelos = []string{"mail.example.com", "mx1.example.com", "example.com", "smtp.gmail.com",
		"outlook.com", "mail.yahoo.com"}
	nxDomains   = []string{"nx-domain.example", "no-such-host.test", "invalid-sender.test", "gone.example"}
	relayRcpts  = []string{"probe@gmail.com", "test@yahoo.com", "x@outlook.com", "relaytest@mail.ru", "a@gmx.net", "check@web.de"}
	dnsblZones  = []string{"zen.spamhaus.org", "zen.spamhaus.org", "zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"}
	saslUsers   = []string{"admin", "info", "test", "user", "postmaster", "sales", "admin@example.com", "info@example.com", "webmaster@example.com"}
	nonSMTPCmds = []string{"GET / HTTP/1.1", "GET / HTTP/1.0", "POST / HTTP/1.1", "GET /robots.txt HTTP/1.1",
		"CONNECT example.org:443 HTTP/1.1", "HEAD / HTTP/1.0", "User-Agent: Mozilla/5.0"}
	tlsCiphers = []string{
		"TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
		"TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
		"TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
	}
	outRelays = []string{"gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com",
		"example-net.mail.protection.outlook.com", "mx.example.org", "mx1.mailhost.example", "mta7.am0.yahoodns.net"}
	outRcptDomains = []string{"gmail.com", "gmail.com", "example.net", "example.org", "mailhost.example", "yahoo.com"}
	cronCmds       = []string{"(root) CMD (test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; })",
		"(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
		"(root) CMD (   cd / && run-parts --report /etc/cron.hourly)",
		"(www-data) CMD (php /var/www/html/cron.php)"}
)

// randV4 returns a global unicast IPv4 address that is not private, shared
// (100.64/10), link-local, loopback, multicast or reserved. Half of them come
// from the documentation ranges.
func (g *gen) randV4() netip.Addr {
	if g.r.IntN(2) == 0 {
		nets := [3][3]byte{{192, 0, 2}, {198, 51, 100}, {203, 0, 113}}
		n := nets[g.r.IntN(3)]
		return netip.AddrFrom4([4]byte{n[0], n[1], n[2], byte(1 + g.r.IntN(254))})
	}
	for {
		u := g.r.Uint32()
		b := [4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}
		if publicV4(b) {
			return netip.AddrFrom4(b)
		}
	}
}

// publicV4 reports whether b looks like an ordinary public address.
func publicV4(b [4]byte) bool {
	switch {
	case b[0] == 0, b[0] == 10, b[0] == 127, b[0] >= 224:
		return false
	case b[0] == 100 && b[1]&0xc0 == 64: // 100.64.0.0/10
		return false
	case b[0] == 169 && b[1] == 254, b[0] == 172 && b[1]&0xf0 == 16, b[0] == 192 && b[1] == 168:
		return false
	case b[0] == 198 && (b[1] == 18 || b[1] == 19): // benchmarking
		return false
	case b[3] == 0 || b[3] == 255:
		return false
	}
	return true
}

// randV6 returns an address in 2001:db8::/32.
func (g *gen) randV6() netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	u := g.r.Uint64()
	b[4], b[5], b[6], b[7] = byte(u>>56), byte(u>>48), byte(u>>40), byte(u>>32)
	if g.r.IntN(3) == 0 { // a host with a small interface id, like ::25
		b[15] = byte(1 + g.r.IntN(254))
	} else {
		v := g.r.Uint64()
		for i := 8; i < 16; i++ {
			b[i] = byte(v >> (8 * (15 - i)))
		}
		b[15] |= 1
	}
	return netip.AddrFrom16(b)
}

func (g *gen) randAddr() (string, bool) {
	if g.r.IntN(100) < 10 {
		return g.randV6().String(), true
	}
	return g.randV4().String(), false
}

func (g *gen) pick(list []string) string { return list[g.r.IntN(len(list))] }

// skewed returns an index in [0,n) where low indexes are far more likely:
// a few clients (big senders, persistent offenders) account for much traffic.
func (g *gen) skewed(n int) int {
	i := int(float64(n) * math.Pow(g.r.Float64(), 2.5))
	if i >= n {
		i = n - 1
	}
	return i
}

// dynName is a generic "dynamic pool" reverse name for addr.
func dynName(ip string, v6 bool) string {
	b := make([]byte, 0, len(ip)+24)
	for i := 0; i < len(ip); i++ {
		c := ip[i]
		if c == '.' || c == ':' {
			c = '-'
		}
		b = append(b, c)
	}
	if v6 {
		return string(append(b, ".ip6.isp.example"...))
	}
	return string(append(b, ".dyn.isp.example"...))
}

func (g *gen) newGoodClient() client {
	ip, v6 := g.randAddr()
	dom := g.pick(remoteDomains)
	name := g.pick(namePrefixes) + strconv.Itoa(1+g.r.IntN(40)) + "." + dom
	c := client{ip: ip, name: name, helo: name, v6: v6}
	if g.r.IntN(100) < 4 { // misconfigured DNS: PTR exists but does not resolve back
		c.ptr, c.name = name, "unknown"
	}
	return c
}

func (g *gen) newBadClient() client {
	ip, v6 := g.randAddr()
	c := client{ip: ip, name: "unknown", v6: v6}
	switch n := g.r.IntN(100); {
	case n < 20:
		c.name = dynName(ip, v6)
	case n < 45:
		c.ptr = dynName(ip, v6)
	}
	switch n := g.r.IntN(100); {
	case n < 60:
		c.helo = g.pick(spamHelos)
	case n < 80:
		c.helo = g.pick(forgedHelos)
	case n < 90:
		c.helo = "[" + ip + "]"
	default:
		c.helo = dynName(ip, v6)
	}
	c.attack = g.pickSpam()
	return c
}

func (g *gen) initPools() {
	g.good = make([]client, 2500)
	for i := range g.good {
		g.good[i] = g.newGoodClient()
	}
	g.bad = make([]client, 800)
	for i := range g.bad {
		g.bad[i] = g.newBadClient()
	}
	g.users = make([]client, 150) // submission users at home/mobile ISPs
	for i := range g.users {
		ip, v6 := g.randAddr()
		g.users[i] = client{ip: ip, name: dynName(ip, v6), helo: "[" + ip + "]", v6: v6}
		if g.r.IntN(3) == 0 {
			g.users[i].name = "unknown"
			g.users[i].helo = "laptop-" + strconv.Itoa(g.r.IntN(1000))
		}
	}
}
