package event

import "strings"

// Reply is a Postfix reject reply, as a log line or the upstream of the
// guard gives it, with what the classifier needs to read it by its
// structure.
//
// Postfix writes most rejects as "<NAME>: CLASS rejected: REASON", where
// NAME is the address, HELO name or client the restriction looked at.
// NAME comes from the client and may contain anything, reason phrases
// included, so the classifier never searches the text for a phrase: it
// strips exactly "<NAME>: " for one of the names below and matches the
// class and reason at the start of what remains.
type Reply struct {
	Code  int    // 550; 0 when the line has none (cleanup)
	DSN   string // "5.1.1"
	Text  string // what follows code and DSN, without a log trailer
	Stage string // "RCPT", "END-OF-MESSAGE", ...

	// The names Postfix may quote before the class. From and To are in
	// the external form of SMTP commands and of log trailers (a local
	// part with specials in double quotes, `"` and `\` escaped);
	// Postfix quotes the internal form (no quotes) in the reply text,
	// and the classifier compares the two without building either.
	From   string
	To     string
	Helo   string // as Postfix logs it (it replaces specials with '?')
	Client string // "NAME[ADDR]", the client as Postfix names it
	// Envelope says From, To and Helo are the reply's own. A log line
	// whose trailer could not be read has none: then only Client and
	// "<DATA>" are stripped, and other "<NAME>: " texts stay ReasonOther.
	Envelope bool
}

// Class is what the classifier makes of a Reply.
type Class struct {
	Reason Reason
	Abuse  bool   // is the reply evidence against the client?
	Detail string // the text without its "<NAME>: " prefix, or the DNSBL zone
}

// classPhrases are the "CLASS rejected: " words Postfix puts after the
// name (smtpd_check.c's reply classes).
var classPhrases = [...]string{
	"Recipient address rejected: ", "Sender address rejected: ", "Helo command rejected: ",
	"Client host rejected: ", "Data command rejected: ", "Etrn command rejected: ",
}

// Classify gives a Postfix reject its Reason and abuse flag. It does not
// allocate. Log parser and guard both use it, so a reply means the same
// whichever side saw it.
func Classify(r Reply) Class {
	text := r.Text
	rest, quoted := stripName(r)
	if quoted {
		text = rest
	}
	c := Class{Reason: ReasonOther, Detail: text}
	switch {
	case quoted || !strings.HasPrefix(r.Text, "<"):
		c.Reason = classifyText(text, r)
	}
	if c.Reason == ReasonOther {
		switch {
		case r.Stage == "END-OF-MESSAGE", r.Stage == "DATA" && r.Code >= 500:
			c.Reason = ReasonMessageRejected
		}
	}
	if c.Reason == ReasonDNSBL {
		c.Detail = dnsblZone(text)
	}
	code := replyCode(r)
	c.Abuse = abusive(c.Reason, code) && !oursToFix(code, r.DSN, text) && !PolicyOwned(text)
	return c
}

// replyCode is r's reply code, or the class of its DSN times 100 when the
// line logs none: cleanup's milter and header/body check rejects carry only
// the DSN ("4.7.1 Service unavailable" is a temporary reject).
func replyCode(r Reply) int {
	if r.Code == 0 && len(r.DSN) > 0 && r.DSN[0] >= '2' && r.DSN[0] <= '5' {
		return int(r.DSN[0]-'0') * 100
	}
	return r.Code
}

// PolicyMark starts the text of every reply of mxguard's policy service
// ("REJECT mxguard: ..."). Postfix logs such a reply as
// "<rcpt>: Recipient address rejected: mxguard: ...".
const PolicyMark = "mxguard: "

// PolicyOwned reports a reject whose text came from mxguard's policy
// service. The policy service emitted the event for it (evidence or
// not), so the line Postfix logs for the same reply is context only:
// counting it too would count the client twice.
func PolicyOwned(text string) bool {
	after, _ := cutClassPrefix(text)
	return strings.HasPrefix(after, PolicyMark)
}

// oursToFix reports a temporary reject that is trouble on our side, not
// the client's doing: a mail-system status (4.3.x: a lookup failure, a
// configuration error, no storage) or an address verification that could
// not finish. During a DNS or backend outage every honest MTA gets these
// and retries: counting them would ban it.
func oursToFix(code int, dsn, text string) bool {
	if code/100 != 4 {
		return false
	}
	return strings.HasPrefix(dsn, "4.3.") ||
		strings.HasPrefix(text, "Recipient address rejected: unverified address") ||
		strings.HasPrefix(text, "Sender address rejected: unverified address")
}

// abusive is the one rule for which rejects are evidence.
func abusive(r Reason, code int) bool {
	switch {
	case r == ReasonServiceUnavailable, r == ReasonGreylisted:
		return false
	case r == ReasonOther && code/100 == 4:
		// temporary trouble on our side (lookup failure, too many
		// recipients)
		return false
	case r == ReasonMessageRejected && code/100 == 4:
		// a milter's tempfail: milter_default_action = tempfail during a
		// milter outage refuses every sender's mail alike, and soft
		// rejects and greylisting milters ask an honest MTA to retry
		return false
	case r == ReasonClientNoRDNS && code/100 == 4:
		// reject_unknown_client_hostname's default 450: DNS may be at
		// fault, and a real MTA retries; banning it would be wrong
		return false
	}
	return true
}

// stripName removes "<NAME>: " from the start of r.Text when NAME is one
// of r's names. When several fit, the longest is Postfix's: a shorter
// one ends inside the real name, where the client wrote ">: " itself
// (RCPT TO:<"a>: Relay access denied"@x> with MAIL FROM:<a>). ok is
// false when the text does not start with '<' or no name fits.
func stripName(r Reply) (rest string, ok bool) {
	t := r.Text
	if len(t) == 0 || t[0] != '<' {
		return t, false
	}
	best := -1
	try := func(after string, fits bool) {
		if !fits || !strings.HasPrefix(after, ">: ") {
			return
		}
		if at := len(t) - len(after) + 3; at > best {
			best = at
		}
	}
	if r.Envelope {
		try(cutExternal(t[1:], r.To))
		try(cutExternal(t[1:], r.From))
		try(strings.CutPrefix(t[1:], r.Helo))
	}
	if r.Client != "" {
		try(strings.CutPrefix(t[1:], r.Client))
	}
	try(strings.CutPrefix(t[1:], "DATA"))
	if best < 0 {
		return t, false
	}
	return t[best:], true
}

// cutExternal matches the internal form of the external address ext at
// the start of s (Postfix's unquote: double quotes go, a backslash inside
// quotes escapes the next byte) and returns what follows it.
func cutExternal(s, ext string) (rest string, ok bool) {
	j := 0
	inQuote := false
	for i := 0; i < len(ext); i++ {
		c := ext[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			continue
		case c == '\\' && inQuote:
			if i+1 == len(ext) {
				return s, false
			}
			i++
			c = ext[i]
		}
		if j >= len(s) || s[j] != c {
			return s, false
		}
		j++
	}
	return s[j:], true
}

// classifyText classifies a reject text that no longer carries a
// "<NAME>: " prefix: its class and reason are at its start.
func classifyText(t string, r Reply) Reason {
	if after, ok := cutClassPrefix(t); ok {
		if strings.HasPrefix(after, "Improper use of SMTP command pipelining") {
			// reject_unauth_pipelining, whatever restriction class ran it
			return ReasonPipelining
		}
	}
	switch {
	case strings.HasPrefix(t, "Recipient address rejected: "):
		a := strings.TrimPrefix(t[28:], PolicyMark)
		switch {
		case strings.HasPrefix(a, "User unknown"), strings.HasPrefix(a, "undeliverable address"),
			strings.HasPrefix(a, "unverified address"):
			return ReasonUnknownRecipient
		case strings.HasPrefix(a, "need fully-qualified address"):
			return ReasonRecipientNonFQDN
		case strings.HasPrefix(a, "Domain not found"):
			return ReasonRecipientDomainNotFound
		case isGreylist(a):
			return ReasonGreylisted
		}
		return ReasonRecipientAccess
	case strings.HasPrefix(t, "Relay access denied"):
		return ReasonRelayDenied
	case strings.HasPrefix(t, "Helo command rejected: "):
		a := strings.TrimPrefix(t[23:], PolicyMark)
		switch {
		case strings.HasPrefix(a, "need fully-qualified hostname"):
			return ReasonHeloNonFQDN
		case strings.HasPrefix(a, "Invalid name"), strings.HasPrefix(a, "invalid ip address"):
			return ReasonHeloInvalid
		case strings.HasPrefix(a, "Host not found"):
			return ReasonHeloNotFound
		}
		return ReasonHeloAccess
	case strings.HasPrefix(t, "Sender address rejected: "):
		a := t[25:]
		switch {
		case strings.HasPrefix(a, "need fully-qualified address"):
			return ReasonSenderNonFQDN
		case strings.HasPrefix(a, "Domain not found"):
			return ReasonSenderDomainNotFound
		}
		return ReasonSenderAccess
	case strings.HasPrefix(t, "Client host rejected: "):
		a := strings.TrimPrefix(t[22:], PolicyMark)
		switch {
		case strings.HasPrefix(a, "cannot find your"):
			return ReasonClientNoRDNS
		case isGreylist(a):
			// postgrey and other greylisting policy services in
			// smtpd_client_restrictions
			return ReasonGreylisted
		}
		return ReasonClientAccess
	case strings.HasPrefix(t, "Data command rejected: Multi-recipient bounce"):
		return ReasonMultiRecipientBounce
	case strings.HasPrefix(t, "Service unavailable; ") && dnsblZone(t) != "":
		return ReasonDNSBL
	case strings.HasPrefix(t, "Service currently unavailable") && r.Code == 450:
		return ReasonServiceUnavailable
	case strings.HasPrefix(t, "Protocol error"):
		return ReasonProtocolError
	case strings.HasPrefix(t, "Authentication required"):
		return ReasonAuthRequired
	case isGreylist(t):
		// milter-greylist and policy servers without a class prefix
		return ReasonGreylisted
	}
	return ReasonOther
}

// cutClassPrefix cuts "CLASS rejected: " from the start of t.
func cutClassPrefix(t string) (string, bool) {
	for _, p := range classPhrases {
		if strings.HasPrefix(t, p) {
			return t[len(p):], true
		}
	}
	return t, false
}

// isGreylist reports whether a reason starts with "Greylist"
// (postgrey's "Greylisted, see ...", the guard's own, milter-greylist's
// "Greylisting in action").
func isGreylist(a string) bool {
	return len(a) >= 8 && (a[0] == 'G' || a[0] == 'g') && a[1:8] == "reylist"
}

// dnsblZone reads the zone of "Service unavailable; Client host [ADDR]
// blocked using ZONE[; reason]" (reject_rbl_client, reject_rhsbl_*) and
// of postscreen's "client [ADDR] blocked using ZONE". The bracketed name
// is an address or a domain, never free text, so the first "]" ends it.
func dnsblZone(t string) string {
	t, ok := strings.CutPrefix(t, "Service unavailable; ")
	if !ok {
		return ""
	}
	open := strings.IndexByte(t, '[')
	if open < 0 || open > 30 {
		return ""
	}
	end := strings.IndexByte(t[open:], ']')
	if end < 0 {
		return ""
	}
	zone, ok := strings.CutPrefix(t[open+end+1:], " blocked using ")
	if !ok {
		return ""
	}
	if j := strings.IndexAny(zone, "; ,"); j >= 0 {
		zone = zone[:j]
	}
	return zone
}

// AfterData reports whether a session had reached the message content
// at stage: a connection lost or timed out there is a network problem,
// not abuse.
func AfterData(stage string) bool {
	return stage == "DATA" || stage == "END-OF-MESSAGE" || stage == "BDAT"
}

// QuoteLocal returns addr (internal form: no quotes, as an SMTP server
// reads it) in the external form SMTP commands and Postfix logs use: a
// local part that is not a dot-atom goes in double quotes, with `"` and
// `\` escaped.
func QuoteLocal(addr string) string {
	if addr == "" {
		return ""
	}
	local, domain := addr, ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], addr[i:]
	}
	if isDotAtom(local) {
		return addr
	}
	var b strings.Builder
	b.Grow(len(addr) + 4)
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if local[i] == '"' || local[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	b.WriteString(domain)
	return b.String()
}

// isDotAtom reports whether s is an RFC 5321 dot-string of atext
// (8-bit bytes allowed, as SMTPUTF8 does).
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		case c == '.':
			if s[i-1] == '.' {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// HeloAsLogged returns a HELO name as Postfix's smtpd keeps it (and so
// quotes and logs it): blanks, control bytes and <>()\";@= become '?'.
func HeloAsLogged(name string) string {
	if !strings.ContainsFunc(name, heloSpecial) {
		return name
	}
	b := []byte(name)
	for i, c := range b {
		if heloSpecial(rune(c)) {
			b[i] = '?'
		}
	}
	return string(b)
}

func heloSpecial(c rune) bool {
	return c <= ' ' || c == 0x7f || strings.ContainsRune(`<>()\";@=`, c)
}
