package loggen

import "strconv"

// abuse renders one session of c's preferred attack.
func (g *gen) abuse(s *session, c *client) {
	switch c.attack {
	case scPSPregreet, scPSDNSBL, scPSHangup, scPSPipelining, scPSOther:
		g.postscreenAbuse(s, c)
	case scSASL:
		g.saslBrute(s, c)
	default:
		g.smtpdAbuse(s, c)
	}
}

func (g *gen) spamSender() string {
	return g.pick(spamLocals) + "@" + g.pick(spamDomains)
}

// rej logs an smtpd NOQUEUE reject at stage; msg is the reply text.
func (s *session) rej(svc string, pid int, stage string, c *client, from, to, proto, helo string, msg ...string) {
	s.pf(svc, pid).a("NOQUEUE: reject: ", stage, " from ", c.name, "[", c.ip, "]: ").a(msg...)
	s.a(";")
	if from != "" || to != "" {
		s.a(" from=<", from, "> to=<", to, ">")
	}
	s.a(" proto=", proto)
	if helo != "" {
		s.a(" helo=<", helo, ">")
	}
	s.end(true)
}

// smtpdAbuse simulates a spam client that gets past postscreen (or reaches
// smtpd directly) and is rejected there.
func (g *gen) smtpdAbuse(s *session, c *client) {
	if g.r.IntN(10) < 8 {
		port := g.port()
		g.psConnect(s, c, port)
		if g.r.IntN(3) == 0 {
			s.pf("postscreen", g.postscreenPID).a("PASS NEW [", c.ip, "]:", port).end(false)
		} else {
			s.pf("postscreen", g.postscreenPID).a("PASS OLD [", c.ip, "]:", port).end(false)
		}
	}
	const svc = "smtpd"
	pid := g.smtpdConnect(s, svc, &g.smtpd, c)
	from := g.spamSender()
	helo := c.helo
	proto := "ESMTP"
	if g.r.IntN(5) == 0 {
		proto = "SMTP"
	}
	ehlo := cmdStat{"ehlo", 1, 1}
	if proto == "SMTP" {
		ehlo.name = "helo"
	}
	quit := cmdStat{"quit", 1, 1}
	if g.r.IntN(3) == 0 {
		quit.total = 0
	}
	switch c.attack {
	case scDictionary:
		n := 2 + g.r.IntN(9)
		for range n {
			to := g.pick(guessUsers) + strconv.Itoa(g.r.IntN(3)) + "@" + localDomain
			table := "virtual mailbox table"
			if g.r.IntN(3) == 0 {
				table = "local recipient table"
			}
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "550 5.1.1 <", to, ">: Recipient address rejected: User unknown in ", table)
		}
		if n >= 6 && g.r.IntN(2) == 0 {
			s.pf(svc, pid).a("too many errors after RCPT from ", c.name, "[", c.ip, "]").end(true)
			s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, n})
			return
		}
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, n}, cmdStat{"rset", 1, 1}, quit)
	case scRelay:
		n := 1 + g.r.IntN(3)
		for range n {
			to := g.pick(relayRcpts)
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "554 5.7.1 <", to, ">: Relay access denied")
		}
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, n}, quit)
	case scHelo:
		to := g.localRcpt()
		switch g.r.IntN(4) {
		case 0:
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "450 4.7.1 <", helo, ">: Helo command rejected: Host not found")
		case 1:
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "501 5.5.2 <", helo, ">: Helo command rejected: Invalid name")
		default:
			helo = g.pick(spamHelos)
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "504 5.5.2 <", helo, ">: Helo command rejected: need fully-qualified hostname")
		}
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, 1}, quit)
	case scSender:
		to := g.localRcpt()
		if g.r.IntN(2) == 0 {
			from = g.pick(spamLocals) + "@" + g.pick(nxDomains)
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "450 4.1.8 <", from, ">: Sender address rejected: Domain not found")
		} else {
			from = g.pick(spamLocals)
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "504 5.5.2 <", from, ">: Sender address rejected: need fully-qualified address")
		}
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, 1}, quit)
	case scClientRDNS:
		to := g.localRcpt()
		if g.r.IntN(4) == 0 {
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "550 5.7.25 Client host rejected: cannot find your reverse hostname, [", c.ip, "]")
		} else {
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "450 4.7.1 Client host rejected: cannot find your hostname, [", c.ip, "]")
		}
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, 1}, quit)
	case scDNSBLSmtpd:
		to := g.localRcpt()
		zone := g.pick(dnsblZones)
		if zone == "zen.spamhaus.org" {
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "554 5.7.1 Service unavailable; Client host [", c.ip,
				"] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/", c.ip)
		} else {
			s.rej(svc, pid, "RCPT", c, from, to, proto, helo, "554 5.7.1 Service unavailable; Client host [", c.ip,
				"] blocked using ", zone)
		}
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 0, 1}, quit)
	case scPipelining:
		to := g.localRcpt()
		if g.r.IntN(3) == 0 {
			s.pf(svc, pid).a("improper command pipelining after CONNECT from ", c.name, "[", c.ip, "]: EHLO ", helo, `\r\n`).end(true)
		} else {
			s.pf(svc, pid).a("improper command pipelining after EHLO from ", c.name, "[", c.ip, "]: MAIL FROM:<", from,
				`>\r\nRCPT TO:<`, to, `>\r\nDATA\r\n`).end(true)
		}
		if g.r.IntN(2) == 0 {
			s.rej(svc, pid, "DATA", c, from, to, proto, helo, "554 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining")
		}
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 1, 1}, cmdStat{"data", 0, 1}, quit)
	case scNonSMTP:
		cmd := g.pick(nonSMTPCmds)
		s.pf(svc, pid).a("warning: non-SMTP command from ", c.name, "[", c.ip, "]: ", cmd).end(true)
		s.disconnect(svc, pid, c, cmdStat{"unknown", 0, 1})
	case scTimeout:
		st := g.pick([]string{"CONNECT", "EHLO", "MAIL", "RCPT", "DATA"})
		if g.r.IntN(2) == 0 {
			s.pf(svc, pid).a("lost connection after ", st, " from ", c.name, "[", c.ip, "]").end(false)
		} else if st == "DATA" && g.r.IntN(2) == 0 {
			s.pf(svc, pid).a("timeout after DATA (").n(g.r.IntN(9000)).a(" bytes) from ", c.name, "[", c.ip, "]").end(false)
		} else {
			s.pf(svc, pid).a("timeout after ", st, " from ", c.name, "[", c.ip, "]").end(false)
		}
		if st == "CONNECT" {
			s.disconnect(svc, pid, c)
		} else {
			s.disconnect(svc, pid, c, ehlo)
		}
	case scConnectReject:
		s.rej(svc, pid, "CONNECT", c, "", "", "SMTP", "", "554 5.7.1 <", c.name, "[", c.ip, "]>: Client host rejected: Access denied")
		s.disconnect(svc, pid, c)
	case scMilter:
		to := g.localRcpt()
		qid := g.queueID()
		s.pf(svc, pid).a(qid, ": client=", c.name, "[", c.ip, "]").end(false)
		s.pf("cleanup", g.cleanup.any(g)).a(qid, ": milter-reject: END-OF-MESSAGE from ", c.name, "[", c.ip,
			"]: 5.7.1 Spam message rejected; from=<", from, "> to=<", to, "> proto=", proto, " helo=<", helo, ">").end(true)
		s.disconnect(svc, pid, c, ehlo, cmdStat{"mail", 1, 1}, cmdStat{"rcpt", 1, 1}, cmdStat{"data", 0, 1}, quit)
	default:
		s.disconnect(svc, pid, c, ehlo, quit)
	}
}

// saslBrute simulates password guessing, on submission (587) or port 25.
func (g *gen) saslBrute(s *session, c *client) {
	svc, pool := "submission/smtpd", &g.subm
	if g.r.IntN(10) < 4 {
		svc, pool = "smtpd", &g.smtpd
		if g.r.IntN(2) == 0 {
			port := g.port()
			g.psConnect(s, c, port)
			s.pf("postscreen", g.postscreenPID).a("PASS OLD [", c.ip, "]:", port).end(false)
		}
	}
	pid := g.smtpdConnect(s, svc, pool, c)
	n := 1 + g.r.IntN(3)
	mech := "LOGIN"
	if g.r.IntN(3) == 0 {
		mech = "PLAIN"
	}
	for range n {
		s.pf(svc, pid).a("warning: ", c.name, "[", c.ip, "]: SASL ", mech, " authentication failed: ")
		switch {
		case mech == "LOGIN" && g.r.IntN(2) == 0:
			s.a("UGFzc3dvcmQ6")
		default:
			s.a("authentication failure, sasl_username=", g.pick(saslUsers))
		}
		s.end(true)
	}
	switch g.r.IntN(3) {
	case 0:
		s.pf(svc, pid).a("lost connection after AUTH from ", c.name, "[", c.ip, "]").end(true)
		s.disconnect(svc, pid, c, cmdStat{"ehlo", 1, 1}, cmdStat{"auth", 0, n})
	case 1:
		s.disconnect(svc, pid, c, cmdStat{"ehlo", 1, 1}, cmdStat{"auth", 0, n}, cmdStat{"quit", 1, 1})
	default:
		s.disconnect(svc, pid, c, cmdStat{"ehlo", 1, 1}, cmdStat{"auth", 0, n}, cmdStat{"rset", 1, 1}, cmdStat{"quit", 1, 1})
	}
}

// postscreenAbuse simulates a bot that postscreen catches before smtpd.
func (g *gen) postscreenAbuse(s *session, c *client) {
	port := g.port()
	g.psConnect(s, c, port)
	ps := func() *session { return s.pf("postscreen", g.postscreenPID) }
	dnsbl := func() {
		rank := 1 + g.r.IntN(8)
		ps().a("DNSBL rank ").n(rank).a(" for [", c.ip, "]:", port).end(true)
	}
	switch c.attack {
	case scPSPregreet:
		greet := "EHLO " + c.helo
		ms := 10 + g.r.IntN(900)
		ps().a("PREGREET ").n(len(greet)+2).a(" after ").secs(ms).a(" from [", c.ip, "]:", port, ": ", greet, `\r\n`).end(true)
		if g.r.IntN(2) == 0 {
			dnsbl()
		}
	case scPSDNSBL:
		dnsbl()
		if g.r.IntN(10) < 6 {
			ps().a("NOQUEUE: reject: RCPT from [", c.ip, "]:", port, ": 550 5.7.1 Service unavailable; client [", c.ip,
				"] blocked using zen.spamhaus.org; from=<", g.spamSender(), ">, to=<", g.localRcpt(), ">, proto=ESMTP, helo=<", c.helo, ">").end(true)
		}
	case scPSHangup:
		if g.r.IntN(3) == 0 {
			dnsbl()
		}
		ms := 50 + g.r.IntN(5000)
		if g.r.IntN(2) == 0 {
			ps().a("HANGUP after ").secs(ms).a(" from [", c.ip, "]:", port, " in tests after SMTP handshake").end(true)
		} else {
			ps().a("HANGUP after ").secs(ms).a(" from [", c.ip, "]:", port, " in tests before SMTP handshake").end(true)
		}
	case scPSPipelining:
		if g.r.IntN(2) == 0 {
			ps().a("PASS NEW [", c.ip, "]:", port).end(false)
		}
		ps().a("COMMAND PIPELINING from [", c.ip, "]:", port, " after MAIL: RCPT TO:<", g.localRcpt(), `>\r\n`).end(true)
	default:
		switch g.r.IntN(4) {
		case 0:
			ps().a("BARE NEWLINE from [", c.ip, "]:", port, " after DATA").end(true)
		case 1:
			ps().a("COMMAND COUNT LIMIT from [", c.ip, "]:", port, " after RCPT").end(true)
		case 2:
			ps().a("DENYLISTED [", c.ip, "]:", port).end(true)
		default:
			ps().a("BLACKLISTED [", c.ip, "]:", port).end(true)
		}
	}
	g.psDisconnect(s, c, port)
}
