package loggen

import (
	"strconv"
	"time"
)

// scenario is one kind of simulated session.
type scenario uint8

const (
	// normal traffic (0 is no scenario)
	scInbound      scenario = iota + 1 // postscreen pass, smtpd, cleanup, qmgr, delivery
	scInboundNew                       // postscreen PASS NEW and its 450 4.3.2 (benign)
	scGreylist                         // policy service 450 4.2.0 (benign)
	scSubmission                       // authenticated user relays out; sent/deferred/bounced
	scLocal                            // pickup: cron mail to root
	scLegitLost                        // a good client that drops the connection
	scOther                            // dovecot, cron, kernel
	scHousekeeping                     // anvil statistics, postscreen cache cleanup
	// abuse
	scDictionary
	scRelay
	scHelo
	scSender
	scClientRDNS
	scDNSBLSmtpd
	scPipelining
	scSASL
	scNonSMTP
	scTimeout
	scConnectReject
	scMilter
	scPSPregreet
	scPSDNSBL
	scPSHangup
	scPSPipelining
	scPSOther
	scCount
)

type weighted struct {
	sc scenario
	w  int
}

// Session mix. Abuse sessions are short and dense in evidence, normal ones
// are long, so these weights give roughly 15-18% evidence lines.
var (
	goodMix = []weighted{
		{scInbound, 520}, {scInboundNew, 40}, {scGreylist, 25}, {scSubmission, 140},
		{scLocal, 30}, {scLegitLost, 45}, {scOther, 120}, {scHousekeeping, 4},
	}
	spamMix = []weighted{
		{scDictionary, 90}, {scRelay, 50}, {scHelo, 45}, {scSender, 30}, {scClientRDNS, 50},
		{scDNSBLSmtpd, 35}, {scPipelining, 25}, {scSASL, 120}, {scNonSMTP, 15}, {scTimeout, 25},
		{scConnectReject, 10}, {scMilter, 10}, {scPSPregreet, 80}, {scPSDNSBL, 90},
		{scPSHangup, 40}, {scPSPipelining, 20}, {scPSOther, 10},
	}
	goodTotal, spamTotal = total(goodMix), total(spamMix)
)

// spamPerMille is the share of sessions that are abuse.
const spamPerMille = 480

func total(ws []weighted) int {
	t := 0
	for _, w := range ws {
		t += w.w
	}
	return t
}

func (g *gen) pickFrom(ws []weighted, tot int) scenario {
	n := g.r.IntN(tot)
	for _, w := range ws {
		if n < w.w {
			return w.sc
		}
		n -= w.w
	}
	return ws[len(ws)-1].sc
}

func (g *gen) pickSpam() scenario { return g.pickFrom(spamMix, spamTotal) }

// fill renders one session into s.
func (g *gen) fill(s *session) {
	if g.r.IntN(1000) < spamPerMille {
		var c client
		if g.r.IntN(100) < 70 { // repeat offender
			c = g.bad[g.skewed(len(g.bad))]
			if g.r.IntN(5) == 0 {
				c.attack = g.pickSpam()
			}
		} else {
			c = g.newBadClient()
		}
		g.abuse(s, &c)
		return
	}
	sc := g.pickFrom(goodMix, goodTotal)
	if g.cfg.Format == FormatMaillog && sc == scOther {
		sc = scInbound // maillog_file holds Postfix lines only
	}
	switch sc {
	case scInbound, scInboundNew, scGreylist, scLegitLost:
		c := g.good[g.skewed(len(g.good))]
		g.inbound(s, &c, sc)
	case scSubmission:
		g.submission(s)
	case scLocal:
		g.localMail(s)
	case scOther:
		g.other(s)
	case scHousekeeping:
		g.housekeeping(s)
	}
}

func (g *gen) serverIP(v6 bool) string {
	if v6 {
		return "2001:db8::25"
	}
	return "192.0.2.1"
}

func (g *gen) port() string { return strconv.Itoa(1024 + g.r.IntN(64000)) }

func (g *gen) psConnect(s *session, c *client, port string) {
	s.pf("postscreen", g.postscreenPID).a("CONNECT from [", c.ip, "]:", port, " to [", g.serverIP(c.v6), "]:25").end(false)
}

func (g *gen) psDisconnect(s *session, c *client, port string) {
	s.pf("postscreen", g.postscreenPID).a("DISCONNECT [", c.ip, "]:", port).end(false)
}

// smtpdConnect logs the start of an smtpd session and returns its pid.
func (g *gen) smtpdConnect(s *session, svc string, pool *pidPool, c *client) int {
	slot := pool.acquire(g)
	s.hold = slot
	if c.ptr != "" {
		s.pf(svc, slot.pid).a("warning: hostname ", c.ptr, " does not resolve to address ", c.ip)
		switch g.r.IntN(4) {
		case 0:
			s.a(": Temporary failure in name resolution")
		case 1:
		default:
			s.a(": Name or service not known")
		}
		s.end(false)
	}
	s.pf(svc, slot.pid).a("connect from ", c.name, "[", c.ip, "]").end(false)
	return slot.pid
}

type cmdStat struct {
	name      string
	ok, total int
}

// disconnect logs smtpd's "disconnect from" with command statistics:
// name=ok when all succeeded, name=ok/total otherwise.
func (s *session) disconnect(svc string, pid int, c *client, stats ...cmdStat) {
	s.pf(svc, pid).a("disconnect from ", c.name, "[", c.ip, "]")
	ok, tot := 0, 0
	for _, st := range stats {
		if st.total == 0 {
			continue
		}
		s.a(" ", st.name, "=").n(st.ok)
		if st.ok != st.total {
			s.a("/").n(st.total)
		}
		ok += st.ok
		tot += st.total
	}
	s.a(" commands=").n(ok)
	if ok != tot {
		s.a("/").n(tot)
	}
	s.end(false)
}

func (g *gen) tls(s *session, svc string, pid int, c *client) {
	s.pf(svc, pid).a("Anonymous TLS connection established from ", c.name, "[", c.ip, "]: ", g.pick(tlsCiphers)).end(false)
}

func (g *gen) messageID(s *session, qid, domain string) {
	var b [16]byte
	u := g.r.Uint64()
	for i := range b {
		b[i] = qidDigits[u&15]
		u >>= 4
	}
	s.pf("cleanup", g.cleanup.any(g)).a(qid, ": message-id=<", string(b[:]), "@", domain, ">").end(false)
}

func (g *gen) delays() (total int, parts [4]int) {
	parts = [4]int{g.r.IntN(300), g.r.IntN(20), g.r.IntN(40), 5 + g.r.IntN(400)}
	return parts[0] + parts[1] + parts[2] + parts[3], parts
}

func (s *session) delay(total int, p [4]int) *session {
	s.a(", delay=").secs(total).a(", delays=").secs(p[0]).a("/").secs(p[1]).a("/").secs(p[2]).a("/").secs(p[3])
	return s
}

// deliverLocal logs a successful local delivery for rcpt.
func (g *gen) deliverLocal(s *session, qid, rcpt string) {
	tot, p := g.delays()
	switch n := g.r.IntN(10); {
	case n < 6:
		s.pf("lmtp", g.lmtp.any(g)).a(qid, ": to=<", rcpt, ">, relay=mx1.", localDomain, "[private/dovecot-lmtp]").delay(tot, p).
			a(", dsn=2.0.0, status=sent (250 2.0.0 <", rcpt, "> ", g.token(), " Saved)").end(false)
	case n < 9:
		s.pf("local", g.local.any(g)).a(qid, ": to=<", rcpt, ">, relay=local").delay(tot, p).
			a(", dsn=2.0.0, status=sent (delivered to mailbox)").end(false)
	default:
		s.pf("virtual", g.local.any(g)).a(qid, ": to=<", rcpt, ">, relay=virtual").delay(tot, p).
			a(", dsn=2.0.0, status=sent (delivered to maildir)").end(false)
	}
}

// token returns a short random base64-looking token (dovecot ids, sessions).
func (g *gen) token() string {
	const al = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var b [12]byte
	u := g.r.Uint64()
	for i := range b {
		b[i] = al[u&63]
		u >>= 5
	}
	return string(b[:])
}

func (g *gen) localRcpt() string { return g.pick(localUsers) + "@" + localDomain }

func (g *gen) remoteSender(c *client) string {
	dom := g.pick(remoteDomains)
	switch g.r.IntN(3) {
	case 0:
		return "newsletter@" + dom
	case 1:
		return "bounces+" + strconv.Itoa(g.r.IntN(1e6)) + "@" + dom
	}
	return g.pick(localUsers) + "." + g.pick(guessUsers) + "@" + dom
}

// inbound simulates a good client on port 25 behind postscreen.
func (g *gen) inbound(s *session, c *client, sc scenario) {
	port := g.port()
	g.psConnect(s, c, port)
	ps := s.pf("postscreen", g.postscreenPID)
	switch n := g.r.IntN(100); {
	case sc == scInboundNew || n < 12:
		ps.a("PASS NEW [", c.ip, "]:", port).end(false)
		if sc == scInboundNew {
			from := g.remoteSender(c)
			s.pf("postscreen", g.postscreenPID).a("NOQUEUE: reject: RCPT from [", c.ip, "]:", port,
				": 450 4.3.2 Service currently unavailable; from=<", from, ">, to=<", g.localRcpt(),
				">, proto=ESMTP, helo=<", c.helo, ">").end(false)
			g.psDisconnect(s, c, port)
			return
		}
	case n < 16:
		if g.r.IntN(4) == 0 {
			ps.a("ALLOWLISTED [", c.ip, "]:", port).end(false)
		} else {
			ps.a("WHITELISTED [", c.ip, "]:", port).end(false)
		}
	default:
		ps.a("PASS OLD [", c.ip, "]:", port).end(false)
	}
	pid := g.smtpdConnect(s, "smtpd", &g.smtpd, c)
	starttls := 0
	if g.r.IntN(10) < 7 {
		g.tls(s, "smtpd", pid, c)
		starttls = 1
	}
	from := g.remoteSender(c)
	switch sc {
	case scGreylist:
		to := g.localRcpt()
		s.pf("smtpd", pid).a("NOQUEUE: reject: RCPT from ", c.name, "[", c.ip, "]: 450 4.2.0 <", to,
			">: Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/help/", localDomain,
			".html; from=<", from, "> to=<", to, "> proto=ESMTP helo=<", c.helo, ">").end(false)
		s.disconnect("smtpd", pid, c, cmdStat{"ehlo", 1 + starttls, 1 + starttls}, cmdStat{"starttls", starttls, starttls},
			cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, 1}, cmdStat{"quit", 1, 1})
		return
	case scLegitLost:
		stages := []string{"CONNECT", "EHLO", "STARTTLS", "DATA", "END-OF-MESSAGE", "QUIT"}
		st := g.pick(stages)
		if g.r.IntN(4) == 0 {
			s.pf("smtpd", pid).a("timeout after ", st, " from ", c.name, "[", c.ip, "]").end(false)
		} else {
			s.pf("smtpd", pid).a("lost connection after ", st, " from ", c.name, "[", c.ip, "]").end(false)
		}
		s.disconnect("smtpd", pid, c, cmdStat{"ehlo", 1, 1}, cmdStat{"starttls", 0, 1})
		return
	}
	qid := g.queueID()
	s.pf("smtpd", pid).a(qid, ": client=", c.name, "[", c.ip, "]").end(false)
	g.messageID(s, qid, c.name)
	nrcpt := 1
	if g.r.IntN(6) == 0 {
		nrcpt = 2 + g.r.IntN(3)
	}
	rcpts := make([]string, nrcpt)
	for i := range rcpts {
		rcpts[i] = g.localRcpt()
	}
	bad := 0
	if g.r.IntN(40) == 0 { // a good sender with a stale address: one real reject
		bad = 1
		to := g.pick(guessUsers) + "@" + localDomain
		s.pf("smtpd", pid).a("NOQUEUE: reject: RCPT from ", c.name, "[", c.ip, "]: 550 5.1.1 <", to,
			">: Recipient address rejected: User unknown in virtual mailbox table; from=<", from, "> to=<", to,
			"> proto=ESMTP helo=<", c.helo, ">").end(true)
	}
	s.pf("qmgr", g.qmgrPID).a(qid, ": from=<", from, ">, size=").n(800 + g.r.IntN(60000)).a(", nrcpt=").n(nrcpt).a(" (queue active)").end(false)
	s.disconnect("smtpd", pid, c, cmdStat{"ehlo", 1 + starttls, 1 + starttls}, cmdStat{"starttls", starttls, starttls},
		cmdStat{"mail", 1, 1}, cmdStat{"rcpt", nrcpt, nrcpt + bad}, cmdStat{"data", 1, 1}, cmdStat{"quit", 1, 1})
	for _, r := range rcpts {
		g.deliverLocal(s, qid, r)
	}
	s.pf("qmgr", g.qmgrPID).a(qid, ": removed").end(false)
}

// submission simulates an authenticated user sending mail out.
func (g *gen) submission(s *session) {
	c := &g.users[g.skewed(len(g.users))]
	svc := "submission/smtpd"
	pid := g.smtpdConnect(s, svc, &g.subm, c)
	g.tls(s, svc, pid, c)
	user := g.localRcpt()
	qid := g.queueID()
	s.pf(svc, pid).a(qid, ": client=", c.name, "[", c.ip, "], sasl_method=", g.pick([]string{"PLAIN", "PLAIN", "LOGIN"}),
		", sasl_username=", user).end(false)
	g.messageID(s, qid, localDomain)
	s.pf("qmgr", g.qmgrPID).a(qid, ": from=<", user, ">, size=").n(900 + g.r.IntN(200000)).a(", nrcpt=1 (queue active)").end(false)
	s.disconnect(svc, pid, c, cmdStat{"ehlo", 2, 2}, cmdStat{"starttls", 1, 1}, cmdStat{"auth", 1, 1},
		cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 1, 1}, cmdStat{"data", 1, 1}, cmdStat{"quit", 1, 1})
	spid := g.smtp.any(g)
	relay := g.pick(outRelays)
	rip, _ := g.randAddr()
	to := g.pick(localUsers) + strconv.Itoa(g.r.IntN(100)) + "@" + g.pick(outRcptDomains)
	tot, p := g.delays()
	tot, p[2] = tot+g.r.IntN(900), p[2]+g.r.IntN(900)
	switch n := g.r.IntN(100); {
	case n < 8:
		nx := "mx." + g.pick(nxDomains)
		to = "someone@" + nx[3:]
		p[2] = 30000
		s.pf("smtp", spid).a(qid, ": to=<", to, ">, relay=none").delay(tot+30000, p).
			a(", dsn=4.4.1, status=deferred (connect to ", nx, "[", rip, "]:25: Connection timed out)").end(false)
		return // stays in the queue
	case n < 12:
		s.pf("smtp", spid).a(qid, ": to=<", to, ">, relay=", relay, "[", rip, "]:25").delay(tot, p).
			a(", dsn=5.1.1, status=bounced (host ", relay, "[", rip, "] said: 550 5.1.1 <", to,
				">: Recipient address rejected: User unknown (in reply to RCPT TO command))").end(false)
		nqid := g.queueID()
		s.pf("cleanup", g.cleanup.any(g)).a(nqid, ": message-id=<", qid, ".", strconv.Itoa(g.r.IntN(1e9)), "@mx1.", localDomain, ">").end(false)
		s.pf("bounce", g.bounce.any(g)).a(qid, ": sender non-delivery notification: ", nqid).end(false)
		s.pf("qmgr", g.qmgrPID).a(nqid, ": from=<>, size=").n(2500 + g.r.IntN(5000)).a(", nrcpt=1 (queue active)").end(false)
		s.pf("qmgr", g.qmgrPID).a(qid, ": removed").end(false)
		g.deliverLocal(s, nqid, user)
		s.pf("qmgr", g.qmgrPID).a(nqid, ": removed").end(false)
		return
	default:
		s.pf("smtp", spid).a("Trusted TLS connection established to ", relay, "[", rip, "]:25: ", g.pick(tlsCiphers)).end(false)
		s.pf("smtp", spid).a(qid, ": to=<", to, ">, relay=", relay, "[", rip, "]:25").delay(tot, p).
			a(", dsn=2.0.0, status=sent (250 2.0.0 OK  ").n(1764000000+g.r.IntN(1e7)).a(" ", g.token(), " - gsmtp)").end(false)
	}
	s.pf("qmgr", g.qmgrPID).a(qid, ": removed").end(false)
}

// localMail simulates cron output mailed to root.
func (g *gen) localMail(s *session) {
	qid := g.queueID()
	s.pf("pickup", g.pickup.any(g)).a(qid, ": uid=0 from=<root>").end(false)
	g.messageID(s, qid, "mx1."+localDomain)
	s.pf("qmgr", g.qmgrPID).a(qid, ": from=<root@mx1.", localDomain, ">, size=").n(500 + g.r.IntN(3000)).a(", nrcpt=1 (queue active)").end(false)
	tot, p := g.delays()
	s.pf("local", g.local.any(g)).a(qid, ": to=<root@mx1.", localDomain, ">, orig_to=<root>, relay=local").delay(tot, p).
		a(", dsn=2.0.0, status=sent (delivered to mailbox)").end(false)
	s.pf("qmgr", g.qmgrPID).a(qid, ": removed").end(false)
}

// other writes lines of non-Postfix programs found in a Debian mail.log/syslog.
func (g *gen) other(s *session) {
	switch n := g.r.IntN(10); {
	case n < 6:
		u := g.localRcpt()
		c := &g.users[g.skewed(len(g.users))]
		pid := g.dovecot.any(g)
		sess := g.token()
		s.prog("dovecot", pid)
		s.a("imap-login: Login: user=<", u, ">, method=PLAIN, rip=", c.ip, ", lip=", g.serverIP(c.v6), ", mpid=").n(g.newPID()).a(", TLS, session=<", sess, ">").end(false)
		s.prog("dovecot", pid)
		s.a("imap(", u, ")<").n(g.pid).a("><", sess, ">: Logged out in=").n(g.r.IntN(5000)).a(" out=").n(g.r.IntN(500000)).
			a(" deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0").end(false)
	case n < 8:
		s.prog("CRON", g.newPID()).a(g.pick(cronCmds)).end(false)
	default:
		up := g.boot + int((g.now-g.cfg.Start.UnixMicro())/1e6)
		ip, v6 := g.randAddr()
		s.a("kernel: [").n(up).a(".").n(100000+g.r.IntN(900000)).a("] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:ab:cd:ef:08:00 SRC=", ip, " DST=", g.serverIP(v6),
			" LEN=44 TOS=0x00 PREC=0x00 TTL=243 ID=54321 PROTO=TCP SPT=").n(1024+g.r.IntN(64000)).a(" DPT=", g.pick([]string{"23", "22", "3389", "8080", "445"}), " WINDOW=1024 RES=0x00 SYN URGP=0")
		s.postfix = false
		s.end(false)
	}
}

func (g *gen) housekeeping(s *session) {
	t := time.UnixMicro(g.now).In(g.cfg.Start.Location())
	if g.r.IntN(2) == 0 {
		c := &g.bad[g.skewed(len(g.bad))]
		s.pf("anvil", g.anvilPID).a("statistics: max connection rate ").n(2+g.r.IntN(30)).a("/60s for (smtp:", c.ip, ") at ", t.Format(time.Stamp)).end(false)
		s.pf("anvil", g.anvilPID).a("statistics: max connection count ").n(1+g.r.IntN(10)).a(" for (smtp:", c.ip, ") at ", t.Format(time.Stamp)).end(false)
		return
	}
	s.pf("postscreen", g.postscreenPID).a("cache btree:/var/lib/postfix/postscreen_cache full cleanup: retained=").n(500 + g.r.IntN(5000)).
		a(" dropped=").n(g.r.IntN(500)).a(" entries").end(false)
}
