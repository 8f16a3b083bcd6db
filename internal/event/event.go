// Package event is the vocabulary every front door shares: the Event that
// a Postfix log line, a live SMTP session in the guard or a policy request
// becomes, its Kind, the Reason class of a refusal, and the one classifier
// of Postfix reply texts. The detectors see only Events, so they treat
// every source alike.
package event

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"time"
)

// Kind says what a line reports. The same kinds are produced by the log
// parser and by the inline guard, so the detectors treat both alike.
type Kind uint8

const (
	KindNone Kind = iota
	// smtpd
	KindConnect          // connect from
	KindDisconnect       // disconnect from, with command statistics
	KindReject           // NOQUEUE/queue id reject, milter-reject
	KindPipelining       // improper command pipelining (smtpd), COMMAND PIPELINING (postscreen)
	KindTooManyErrors    // too many errors after X
	KindLostConnection   // lost connection after X
	KindTimeout          // timeout after X
	KindSASLFail         // SASL authentication failed
	KindSASLLogin        // queue id: client=..., sasl_username=... (successful AUTH)
	KindNonSMTP          // non-SMTP command (smtpd warning, postscreen NON-SMTP COMMAND)
	KindHostnameMismatch // hostname X does not resolve to address Y
	KindReceived         // queue id: client=... (smtpd accepted a message)
	// postscreen
	KindPSConnect     // CONNECT from
	KindPSPass        // PASS NEW / PASS OLD
	KindPregreet      // PREGREET n after t
	KindHangup        // HANGUP after t
	KindBareNewline   // BARE NEWLINE
	KindCommandLimit  // COMMAND TIME/COUNT/LENGTH LIMIT
	KindDNSBL         // DNSBL rank N
	KindPSDisconnect  // DISCONNECT
	KindPSAllowlisted // ALLOWLISTED / WHITELISTED
	KindPSDenylisted  // DENYLISTED / BLACKLISTED
	// delivery context
	KindQueued    // qmgr: from=<...>, size=..., nrcpt=N (queue active)
	KindDelivered // status=sent
	KindDeferred  // status=deferred
	KindBounced   // status=bounced
	// limits and TLS
	KindRateLimit     // anvil limit warning; Detail names the limit, Count the number
	KindTLSError      // SSL_accept error, TLS library problem (attributed by pid)
	KindRejectWarning // NOQUEUE: reject_warning (warn_if_reject): never abuse
	kindCount
)

var kindNames = [kindCount]string{
	KindNone:             "none",
	KindConnect:          "connect",
	KindDisconnect:       "disconnect",
	KindReject:           "reject",
	KindPipelining:       "pipelining",
	KindTooManyErrors:    "too_many_errors",
	KindLostConnection:   "lost_connection",
	KindTimeout:          "timeout",
	KindSASLFail:         "sasl_fail",
	KindSASLLogin:        "sasl_login",
	KindNonSMTP:          "non_smtp",
	KindHostnameMismatch: "hostname_mismatch",
	KindReceived:         "received",
	KindPSConnect:        "ps_connect",
	KindPSPass:           "ps_pass",
	KindPregreet:         "pregreet",
	KindHangup:           "hangup",
	KindBareNewline:      "bare_newline",
	KindCommandLimit:     "command_limit",
	KindDNSBL:            "dnsbl",
	KindPSDisconnect:     "ps_disconnect",
	KindPSAllowlisted:    "ps_allowlisted",
	KindPSDenylisted:     "ps_denylisted",
	KindQueued:           "queued",
	KindDelivered:        "delivered",
	KindDeferred:         "deferred",
	KindBounced:          "bounced",
	KindRateLimit:        "rate_limit",
	KindTLSError:         "tls_error",
	KindRejectWarning:    "reject_warning",
}

func (k Kind) String() string {
	if k < kindCount {
		return kindNames[k]
	}
	return "invalid"
}

// Kinds lists every kind but KindNone, in order.
func Kinds() []Kind {
	ks := make([]Kind, 0, kindCount-1)
	for k := KindNone + 1; k < kindCount; k++ {
		ks = append(ks, k)
	}
	return ks
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, bool) {
	for k, n := range kindNames {
		if n == s {
			return Kind(k), true
		}
	}
	return KindNone, false
}

func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

func (k *Kind) UnmarshalText(b []byte) error {
	v, ok := ParseKind(string(b))
	if !ok {
		return errors.New("event: unknown kind " + string(b))
	}
	*k = v
	return nil
}

// Reason classifies why Postfix (or the guard) rejected something.
type Reason uint8

const (
	ReasonNone                    Reason = iota
	ReasonUnknownRecipient               // User unknown in ... table, undeliverable address
	ReasonRelayDenied                    // Relay access denied
	ReasonHeloNonFQDN                    // Helo command rejected: need fully-qualified hostname
	ReasonHeloInvalid                    // Helo command rejected: Invalid name
	ReasonHeloNotFound                   // Helo command rejected: Host not found
	ReasonHeloAccess                     // Helo command rejected: anything else (access map)
	ReasonSenderNonFQDN                  // Sender address rejected: need fully-qualified address
	ReasonSenderDomainNotFound           // Sender address rejected: Domain not found
	ReasonSenderAccess                   // Sender address rejected: anything else
	ReasonRecipientNonFQDN               // Recipient address rejected: need fully-qualified address
	ReasonRecipientDomainNotFound        // Recipient address rejected: Domain not found
	ReasonRecipientAccess                // Recipient address rejected: anything else
	ReasonClientNoRDNS                   // Client host rejected: cannot find your (reverse) hostname
	ReasonClientAccess                   // Client host rejected: anything else
	ReasonDNSBL                          // blocked using ZONE
	ReasonGreylisted                     // greylisting / policy service deferral
	ReasonMultiRecipientBounce           // Data command rejected: Multi-recipient bounce
	ReasonPipelining                     // Improper use of SMTP command pipelining
	ReasonServiceUnavailable             // postscreen 450 4.3.2 after its deep tests (benign)
	ReasonAuthRequired                   // Authentication required / not logged in
	ReasonMessageRejected                // END-OF-MESSAGE / milter / content rejects
	ReasonProtocolError                  // postscreen "550 5.5.1 Protocol error" after a failed test
	ReasonOther                          // anything else; the text is in Detail
	reasonCount
)

var reasonNames = [reasonCount]string{
	ReasonNone:                    "",
	ReasonUnknownRecipient:        "unknown_recipient",
	ReasonRelayDenied:             "relay_denied",
	ReasonHeloNonFQDN:             "helo_non_fqdn",
	ReasonHeloInvalid:             "helo_invalid",
	ReasonHeloNotFound:            "helo_not_found",
	ReasonHeloAccess:              "helo_access",
	ReasonSenderNonFQDN:           "sender_non_fqdn",
	ReasonSenderDomainNotFound:    "sender_domain_not_found",
	ReasonSenderAccess:            "sender_access",
	ReasonRecipientNonFQDN:        "recipient_non_fqdn",
	ReasonRecipientDomainNotFound: "recipient_domain_not_found",
	ReasonRecipientAccess:         "recipient_access",
	ReasonClientNoRDNS:            "client_no_rdns",
	ReasonClientAccess:            "client_access",
	ReasonDNSBL:                   "dnsbl",
	ReasonGreylisted:              "greylisted",
	ReasonMultiRecipientBounce:    "multi_recipient_bounce",
	ReasonPipelining:              "pipelining",
	ReasonServiceUnavailable:      "service_unavailable",
	ReasonAuthRequired:            "auth_required",
	ReasonMessageRejected:         "message_rejected",
	ReasonProtocolError:           "protocol_error",
	ReasonOther:                   "other",
}

func (r Reason) String() string {
	if r < reasonCount {
		return reasonNames[r]
	}
	return "invalid"
}

// IsHelo reports whether r is one of the HELO rejection classes.
func (r Reason) IsHelo() bool { return r >= ReasonHeloNonFQDN && r <= ReasonHeloAccess }

// ParseReason is the inverse of Reason.String.
func ParseReason(s string) (Reason, bool) {
	for r, n := range reasonNames {
		if n == s {
			return Reason(r), true
		}
	}
	return ReasonNone, false
}

func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

func (r *Reason) UnmarshalText(b []byte) error {
	v, ok := ParseReason(string(b))
	if !ok {
		return errors.New("event: unknown reason " + string(b))
	}
	*r = v
	return nil
}

// Event is one fact about one SMTP client, from a log line or from the guard.
type Event struct {
	Time       time.Time
	Host       string // syslog host ("" for maillog_file lines)
	Service    string // syslog tag without pid: "postfix/smtpd", "postfix-in/submission/smtpd"
	PID        int
	QueueID    string // "" for NOQUEUE
	Kind       Kind
	Stage      string // SMTP stage: "CONNECT", "EHLO", "RCPT", "DATA", "END-OF-MESSAGE", ...
	Client     netip.Addr
	ClientName string // reverse name or "unknown"
	Port       int
	Helo       string
	From       string
	To         string
	Code       int    // SMTP reply code
	DSN        string // enhanced status code, e.g. "5.1.1"
	Reason     Reason // class of a reject
	Detail     string // reject text, DNSBL zone, SASL user, failed commands, ...
	Count      int    // a number the line carries: DNSBL rank, pregreet bytes, failed commands
	Abuse      bool   // is this line evidence against the client?
	Raw        string // the whole line, for evidence
}

// Clone returns a copy of e whose strings do not alias the parsed line.
func (e Event) Clone() Event {
	e.Host = strings.Clone(e.Host)
	e.Service = strings.Clone(e.Service)
	e.QueueID = strings.Clone(e.QueueID)
	e.Stage = strings.Clone(e.Stage)
	e.ClientName = strings.Clone(e.ClientName)
	e.Helo = strings.Clone(e.Helo)
	e.From = strings.Clone(e.From)
	e.To = strings.Clone(e.To)
	e.DSN = strings.Clone(e.DSN)
	e.Detail = strings.Clone(e.Detail)
	e.Raw = strings.Clone(e.Raw)
	return e
}

// jsonEvent is the public JSON shape of `mxguard events` (see the README;
// pinned by testdata/events/edge.golden.jsonl).
type jsonEvent struct {
	Time       string `json:"time,omitempty"`
	Host       string `json:"host,omitempty"`
	Service    string `json:"service,omitempty"`
	PID        int    `json:"pid,omitempty"`
	QueueID    string `json:"queue_id,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Stage      string `json:"stage,omitempty"`
	IP         string `json:"ip,omitempty"`
	ClientName string `json:"client_name,omitempty"`
	Port       int    `json:"port,omitempty"`
	Helo       string `json:"helo,omitempty"`
	From       string `json:"from,omitempty"`
	To         string `json:"to,omitempty"`
	Code       int    `json:"code,omitempty"`
	DSN        string `json:"dsn,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Detail     string `json:"detail,omitempty"`
	Count      int    `json:"count,omitempty"`
	Abuse      bool   `json:"abuse"`
}

// MarshalJSON writes the snake_case shape of the events contract; empty
// fields are omitted, abuse is always present. Raw is not included.
func (e Event) MarshalJSON() ([]byte, error) {
	j := jsonEvent{
		Host: e.Host, Service: e.Service, PID: e.PID, QueueID: e.QueueID,
		Kind: e.Kind.String(), Stage: e.Stage, ClientName: e.ClientName, Port: e.Port,
		Helo: e.Helo, From: e.From, To: e.To, Code: e.Code, DSN: e.DSN,
		Reason: e.Reason.String(), Detail: e.Detail, Count: e.Count, Abuse: e.Abuse,
	}
	if e.Kind == KindNone {
		j.Kind = ""
	}
	if !e.Time.IsZero() {
		j.Time = e.Time.Format(time.RFC3339Nano)
	}
	if e.Client.IsValid() {
		j.IP = e.Client.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j jsonEvent
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Event{Host: j.Host, Service: j.Service, PID: j.PID, QueueID: j.QueueID, Stage: j.Stage,
		ClientName: j.ClientName, Port: j.Port, Helo: j.Helo, From: j.From, To: j.To, Code: j.Code,
		DSN: j.DSN, Detail: j.Detail, Count: j.Count, Abuse: j.Abuse}
	if j.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, j.Time)
		if err != nil {
			return err
		}
		e.Time = t
	}
	if j.Kind != "" {
		if err := e.Kind.UnmarshalText([]byte(j.Kind)); err != nil {
			return err
		}
	}
	if j.Reason != "" {
		if err := e.Reason.UnmarshalText([]byte(j.Reason)); err != nil {
			return err
		}
	}
	if j.IP != "" {
		a, err := netip.ParseAddr(j.IP)
		if err != nil {
			return err
		}
		e.Client = a
	}
	return nil
}

// Detail values of a KindRateLimit event: which anvil limit was exceeded
// (smtpd_client_connection_rate_limit, _connection_count_limit,
// _message_rate_limit, _recipient_rate_limit, _new_tls_session_rate_limit).
const (
	LimitConnectionRate  = "connection_rate"
	LimitConnectionCount = "connection_count"
	LimitMessageRate     = "message_rate"
	LimitRecipientRate   = "recipient_rate"
	LimitNewTLSRate      = "new_tls_rate"
)
