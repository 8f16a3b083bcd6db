package logparse

import (
	"strings"

	"github.com/mxguard/mxguard/internal/event"
)

// parsePostscreen classifies postscreen(8) lines. See POSTSCREEN_README
// "postscreen logging": every line names the client as "[addr]:port".
func parsePostscreen(msg string, ev *event.Event) error {
	var word string // the verdict word(s) before the client
	kind := event.KindNone
	abuse := false
	switch {
	case strings.HasPrefix(msg, "CONNECT from "):
		word, kind = "CONNECT from ", event.KindPSConnect
	case strings.HasPrefix(msg, "PASS NEW "):
		word, kind = "PASS NEW ", event.KindPSPass
		ev.Detail = "NEW"
	case strings.HasPrefix(msg, "PASS OLD "):
		word, kind = "PASS OLD ", event.KindPSPass
		ev.Detail = "OLD"
	case strings.HasPrefix(msg, "PREGREET "):
		// PREGREET 11 after 0.13 from [addr]:port: EHLO text
		n, rest, _ := strings.Cut(msg[9:], " ")
		cnt, ok := atoi(n)
		i := strings.Index(rest, "from ")
		if !ok || i < 0 {
			return ErrUnrecognized
		}
		ev.Count = cnt
		msg, word, kind, abuse = rest[i:], "from ", event.KindPregreet, true
	case strings.HasPrefix(msg, "HANGUP after "):
		i := strings.Index(msg, " from ")
		if i < 0 {
			return ErrUnrecognized
		}
		msg, word, kind, abuse = msg[i+1:], "from ", event.KindHangup, true
	case strings.HasPrefix(msg, "COMMAND PIPELINING from "):
		word, kind, abuse = "COMMAND PIPELINING from ", event.KindPipelining, true
	case strings.HasPrefix(msg, "NON-SMTP COMMAND from "):
		word, kind, abuse = "NON-SMTP COMMAND from ", event.KindNonSMTP, true
	case strings.HasPrefix(msg, "BARE NEWLINE from "):
		word, kind, abuse = "BARE NEWLINE from ", event.KindBareNewline, true
	case strings.HasPrefix(msg, "COMMAND TIME LIMIT from "):
		word, kind, abuse = "COMMAND TIME LIMIT from ", event.KindCommandLimit, true
		ev.Detail = "TIME"
	case strings.HasPrefix(msg, "COMMAND COUNT LIMIT from "):
		word, kind, abuse = "COMMAND COUNT LIMIT from ", event.KindCommandLimit, true
		ev.Detail = "COUNT"
	case strings.HasPrefix(msg, "COMMAND LENGTH LIMIT from "):
		word, kind, abuse = "COMMAND LENGTH LIMIT from ", event.KindCommandLimit, true
		ev.Detail = "LENGTH"
	case strings.HasPrefix(msg, "DNSBL rank "):
		// DNSBL rank 3 for [addr]:port
		n, rest, _ := strings.Cut(msg[11:], " ")
		cnt, ok := atoi(n)
		if !ok || !strings.HasPrefix(rest, "for ") {
			return ErrUnrecognized
		}
		ev.Count = cnt
		msg, word, kind, abuse = rest, "for ", event.KindDNSBL, true
	case strings.HasPrefix(msg, "DISCONNECT "):
		word, kind = "DISCONNECT ", event.KindPSDisconnect
	case strings.HasPrefix(msg, "ALLOWLISTED "):
		word, kind = "ALLOWLISTED ", event.KindPSAllowlisted
	case strings.HasPrefix(msg, "WHITELISTED "):
		word, kind = "WHITELISTED ", event.KindPSAllowlisted
	case strings.HasPrefix(msg, "DENYLISTED "):
		word, kind, abuse = "DENYLISTED ", event.KindPSDenylisted, true
	case strings.HasPrefix(msg, "BLACKLISTED "):
		word, kind, abuse = "BLACKLISTED ", event.KindPSDenylisted, true
	case strings.HasPrefix(msg, "NOQUEUE: reject: "):
		return parseReject(msg[17:], ev)
	default:
		return ErrUnrecognized
	}
	rest, ok := cutClient(msg[len(word):], ev)
	if !ok {
		return ErrUnrecognized
	}
	ev.Kind, ev.Abuse = kind, abuse
	// "... after CMD: text" names the stage and what the client sent
	if strings.HasPrefix(rest, " after ") {
		stage := rest[7:]
		text := ""
		if i := strings.IndexByte(stage, ':'); i >= 0 {
			stage, text = stage[:i], strings.TrimPrefix(stage[i+1:], " ")
		}
		ev.Stage = stage
		if ev.Detail == "" {
			ev.Detail = text
		}
	} else if kind == event.KindPregreet && strings.HasPrefix(rest, ": ") {
		ev.Detail = rest[2:]
	}
	return nil
}

// parseQmgr reads "QUEUEID: from=<a>, size=123, nrcpt=1 (queue active)".
func parseQmgr(msg string, ev *event.Event) error {
	id, rest, ok := cutQueueID(msg)
	if !ok || id == "" || !strings.HasPrefix(rest, "from=<") || !strings.HasSuffix(rest, "(queue active)") {
		return ErrUnrecognized
	}
	from, _, ok := cutAngle(rest[6:])
	if !ok {
		return ErrUnrecognized
	}
	ev.QueueID, ev.From, ev.Kind = id, from, event.KindQueued
	if i := strings.Index(rest, "nrcpt="); i >= 0 {
		n := rest[i+6:]
		if j := strings.IndexByte(n, ' '); j >= 0 {
			n = n[:j]
		}
		ev.Count, _ = atoi(n)
	}
	return nil
}

// parseDelivery reads "QUEUEID: to=<u@d>, [orig_to=<..>,] relay=..., ...,
// dsn=2.0.0, status=sent (text)".
func parseDelivery(msg string, ev *event.Event) error {
	id, rest, ok := cutQueueID(msg)
	if !ok || id == "" || !strings.HasPrefix(rest, "to=<") {
		return ErrUnrecognized
	}
	to, r, ok := cutAngle(rest[4:])
	if !ok {
		return ErrUnrecognized
	}
	i := strings.Index(r, "status=")
	if i < 1 || r[i-1] != ' ' {
		return ErrUnrecognized
	}
	i--
	st := r[i+8:]
	switch {
	case strings.HasPrefix(st, "sent"):
		ev.Kind = event.KindDelivered
	case strings.HasPrefix(st, "deferred"):
		ev.Kind = event.KindDeferred
	case strings.HasPrefix(st, "bounced"):
		ev.Kind = event.KindBounced
	default:
		return ErrUnrecognized
	}
	if j := strings.Index(r, "dsn="); j >= 0 && j < i {
		d := r[j+4 : i]
		d = strings.TrimSuffix(d, ",")
		if isDSN(d) {
			ev.DSN = d
		}
	}
	if j := strings.IndexByte(st, '('); j >= 0 && strings.HasSuffix(st, ")") {
		ev.Detail = st[j+1 : len(st)-1]
	}
	ev.QueueID, ev.To = id, to
	return nil
}
