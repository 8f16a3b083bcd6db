package policy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"unsafe"
)

// The protocol (Postfix SMTPD_POLICY_README): a request is "name=value"
// lines ended by an empty line; the reply is "action=TEXT" and an empty
// line. Postfix keeps the connection for many requests.

// Why a request is refused: the connection is closed without a reply.
var (
	errMalformed   = errors.New("malformed line (no '=', or a NUL byte)")
	errTooMany     = errors.New("too many attributes")
	errTooBig      = errors.New("request too large")
	errNotPolicy   = errors.New("request=smtpd_access_policy missing")
	errEOFInRecord = errors.New("connection closed inside a request")
)

// span is a value's place in request.buf.
type span struct{ off, end int32 }

// request is one policy request: the attributes the checks read, copied
// into buf, which the connection reuses, so that parsing a request
// allocates nothing once buf has grown. Unknown attributes are skipped.
type request struct {
	buf []byte

	request, state, clientAddress, clientName, helo, sender, recipient,
	recipientCount, sasl, instance, serverAddress span

	attrs int // attribute lines read
	size  int // bytes read
}

func (r *request) reset() {
	buf := r.buf[:0]
	*r = request{buf: buf}
}

// str is the value as a string that shares buf: valid until the next
// request on this connection; clone it to keep it.
func (r *request) str(s span) string {
	if s.end <= s.off {
		return ""
	}
	b := r.buf[s.off:s.end]
	return unsafe.String(&b[0], len(b))
}

// attrSpan returns where the value of a known attribute goes, or nil.
func (r *request) attrSpan(name []byte) *span {
	switch string(name) { // no allocation: the compiler compares in place
	case "request":
		return &r.request
	case "protocol_state":
		return &r.state
	case "client_address":
		return &r.clientAddress
	case "client_name":
		return &r.clientName
	case "helo_name":
		return &r.helo
	case "sender":
		return &r.sender
	case "recipient":
		return &r.recipient
	case "recipient_count":
		return &r.recipientCount
	case "sasl_username":
		return &r.sasl
	case "instance":
		return &r.instance
	case "server_address":
		return &r.serverAddress
	}
	return nil
}

// readLimits are the bounds of one request (Limits).
type readLimits struct {
	maxValue, maxAttrs, maxBytes int
}

// readRequest reads one request into r. It returns io.EOF when the peer
// closed the connection between requests, and another error for a
// request to refuse (or a read error, a timeout among them). started is
// called once the first line of the request has arrived (to set the
// request deadline).
func readRequest(br *bufio.Reader, r *request, lim readLimits, started func()) error {
	r.reset()
	for {
		line, err := br.ReadSlice('\n')
		long := false
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: keep what we have (the
			// value is cut to maxValue anyway) and skip the rest below.
			long, err = true, nil
		}
		if err != nil {
			if err == io.EOF {
				if len(line) == 0 && r.attrs == 0 && r.size == 0 {
					return io.EOF
				}
				return errEOFInRecord
			}
			return err
		}
		if r.size == 0 && started != nil {
			started()
		}
		r.size += len(line)
		if r.size > lim.maxBytes {
			return errTooBig
		}
		if !long {
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) == 0 {
				if r.str(r.request) != "smtpd_access_policy" {
					return errNotPolicy
				}
				return nil
			}
		}
		if r.attrs++; r.attrs > lim.maxAttrs {
			return errTooMany
		}
		eq := bytes.IndexByte(line, '=')
		if eq <= 0 || bytes.IndexByte(line, 0) >= 0 {
			return errMalformed
		}
		if sp := r.attrSpan(line[:eq]); sp != nil {
			v := line[eq+1:]
			if len(v) > lim.maxValue {
				v = v[:lim.maxValue]
			}
			off := len(r.buf)
			r.buf = append(r.buf, v...)
			*sp = span{int32(off), int32(len(r.buf))}
		}
		for long {
			// the rest of the long line: counted and dropped
			rest, err := br.ReadSlice('\n')
			r.size += len(rest)
			if r.size > lim.maxBytes {
				return errTooBig
			}
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
			case err == io.EOF:
				return errEOFInRecord
			case err != nil:
				return err
			default:
				if bytes.IndexByte(rest, 0) >= 0 {
					return errMalformed
				}
				long = false
			}
		}
	}
}

// writeReply writes "action=TEXT\n\n".
func writeReply(bw *bufio.Writer, action string) error {
	bw.WriteString("action=")
	bw.WriteString(action)
	bw.WriteString("\n\n")
	return bw.Flush()
}
