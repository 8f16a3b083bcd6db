package smtpguard

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/internal/event"
)

// dataRelay copies a message from the client to the upstream as it comes,
// still dot-stuffed: the client's bytes are the upstream's bytes, so they
// are neither unstuffed nor stuffed again, and each read from the client
// is one write to the upstream. It is not a blind splice: the guard must
// find the end of the message (<CR><LF>.<CR><LF>, where the guard returns
// to command mode, exactly as readData does) and must not let the
// upstream find another one. Postfix ends a line at a bare LF, so
//
//   - a bare LF goes upstream as CRLF (as textproto's DotWriter does), and
//   - a line that is a dot and nothing but CRs before its LF, other than
//     the end marker itself (e.g. "\n.\r\n" or "\r\n.\n"), goes upstream
//     with its dot doubled, so that Postfix reads a line of data, not the
//     end of the message (SMTP smuggling).
//
// Everything else passes unchanged.
type dataRelay struct {
	atLineStart bool // the next byte starts a line
	crlfBefore  bool // the line starting now follows CRLF (or is the first): it may be the end marker
	dotLine     bool // the line so far is "." (held back) followed by dotCRs CRs (held back)
	dotCRs      int
	prevCR      bool // the last byte was CR
	done        bool // the end marker was read
	n           int64
	out         []byte
}

func newDataRelay() *dataRelay {
	return &dataRelay{atLineStart: true, crlfBefore: true}
}

// scan consumes client bytes from p up to and including the end marker
// and appends what the upstream must get to r.out (without the end
// marker). It returns how many bytes of p it consumed.
func (r *dataRelay) scan(p []byte) int {
	i := 0
	for i < len(p) && !r.done {
		b := p[i]
		i++
		if r.dotLine {
			switch b {
			case '\r':
				r.dotCRs++
				continue
			case '\n':
				r.dotLine = false
				if r.dotCRs == 1 && r.crlfBefore {
					r.done = true
					continue
				}
				// a lone-dot line that is not the end marker: keep it data
				r.out = append(r.out, '.', '.')
				r.out = appendCRs(r.out, max(r.dotCRs, 1))
				r.out = append(r.out, '\n')
				r.atLineStart, r.crlfBefore, r.prevCR = true, r.dotCRs > 0, false
				continue
			default:
				r.dotLine = false
				r.out = append(r.out, '.')
				r.out = appendCRs(r.out, r.dotCRs)
				r.prevCR = false
				r.atLineStart = false
				// b is ordinary line content: handled below
			}
		}
		if r.atLineStart && b == '.' {
			r.dotLine, r.dotCRs, r.atLineStart = true, 0, false
			continue
		}
		r.atLineStart = false
		switch b {
		case '\n':
			if !r.prevCR {
				r.out = append(r.out, '\r')
			}
			r.out = append(r.out, '\n')
			r.atLineStart, r.crlfBefore, r.prevCR = true, r.prevCR, false
		case '\r':
			r.out = append(r.out, '\r')
			r.prevCR = true
		default:
			r.out = append(r.out, b)
			r.prevCR = false
		}
	}
	r.n += int64(i)
	return i
}

func appendCRs(b []byte, n int) []byte {
	for range n {
		b = append(b, '\r')
	}
	return b
}

// relayData moves the message the client sends after 354 to up, then the
// end marker, and returns to command mode. readErr is the client's
// failure (timeout, lost connection, a ban: the caller must drop the
// upstream without the final dot) or smtp.ErrDataTooLarge (the rest of
// the message was read and dropped); err is the upstream's write error.
// Afterwards go-smtp's own data reader sees an empty message: the relay
// hands it a lone end marker.
func (c *guardConn) relayData(up net.Conn, maxBytes int64) (readErr, err error) {
	bufs := c.bigBuffer()
	defer c.restoreBuffer(bufs)
	rl := newDataRelay()
	rl.out = bufs.out[:0]
	defer func() { bufs.out = rl.out[:0] }() // keep what append grew
	tooLarge := false
	for !rl.done {
		if c.r == c.w {
			if err := c.fillData(); err != nil {
				return err, nil
			}
		}
		rl.out = rl.out[:0]
		c.r += rl.scan(c.in[c.r:c.w])
		if maxBytes > 0 && rl.n > maxBytes {
			tooLarge = true
		}
		if tooLarge || err != nil {
			continue // read to the end and drop it
		}
		if rl.done {
			rl.out = append(rl.out, ".\r\n"...)
		}
		if len(rl.out) > 0 {
			_, err = up.Write(rl.out)
		}
	}
	c.endData()
	c.out = append(c.out[:0], ".\r\n"...) // go-smtp's data reader: end of message
	if tooLarge {
		return smtp.ErrDataTooLarge, nil
	}
	return nil, err
}

// dataBufSize is the read buffer while a message is relayed: each read
// from the client is one write to the upstream, so large messages go in
// large writes. Command lines need far less (max_line_length).
const dataBufSize = 32 << 10

// relayBufs are a session's buffers while it relays a message, pooled
// (Guard.dataBufs): only sessions in the middle of a message hold them.
type relayBufs struct {
	in    []byte // the read buffer, dataBufSize
	out   []byte // what goes upstream from one read
	small []byte // the session's own read buffer, back after the message
}

// bigBuffer swaps the session's read buffer for a pooled dataBufSize one,
// with the bytes not yet handed over.
func (c *guardConn) bigBuffer() *relayBufs {
	b, _ := c.g.dataBufs.Get().(*relayBufs)
	if b == nil {
		b = &relayBufs{in: make([]byte, dataBufSize), out: make([]byte, 0, dataBufSize+dataBufSize/8)}
	}
	b.small = c.in
	c.in = b.in
	c.r, c.w = 0, copy(c.in, b.small[c.r:c.w])
	return b
}

// restoreBuffer gives the session its own read buffer back (with the
// commands pipelined behind the message) and the big one to the pool.
func (c *guardConn) restoreBuffer(b *relayBufs) {
	small, rest := b.small, c.in[c.r:c.w]
	if len(rest) > len(small) {
		small = make([]byte, len(rest))
	}
	c.r, c.w = 0, copy(small, rest)
	c.in = small
	b.small = nil
	c.g.dataBufs.Put(b)
}

// fillData waits for message bytes (data_timeout for the whole message,
// idle_timeout between bytes) and turns a failure into the session's end.
func (c *guardConn) fillData() error {
	if c.cs.banReason.Load() != nil {
		c.eof = true
		return errBanned
	}
	deadline := c.dataDeadline()
	err := c.fill(deadline)
	if err == nil {
		return nil
	}
	c.eof = true
	var ne net.Error
	switch {
	case errors.Is(err, errBanned):
	case errors.As(err, &ne) && ne.Timeout():
		c.g.ctr.timeouts.Add(1)
		c.cs.verdict = "timeout after DATA"
		c.g.emit(c.cs, event.Event{Kind: event.KindTimeout, Stage: "DATA",
			Raw: fmt.Sprintf("timeout after DATA from unknown[%s]", c.cs.ip)})
	default:
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.cs.verdict = "lost connection after DATA"
		c.g.emit(c.cs, event.Event{Kind: event.KindLostConnection, Stage: "DATA",
			Raw: fmt.Sprintf("lost connection after DATA from unknown[%s]", c.cs.ip)})
	}
	return err
}
