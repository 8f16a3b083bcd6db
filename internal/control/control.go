// Package control is the daemon's control socket: a Unix socket speaking
// one JSON object per line, request then response, so that the CLI (ban,
// unban, list, explain, status) talks to the one process that holds the
// block list open.
//
//	→ {"cmd":"ban","ip":"203.0.113.7","for":"2h","reason":"spam run"}
//	← {"ok":true,"result":{...}}
//	← {"ok":false,"error":"ban 127.0.0.1/32: prefix overlaps the allowlist"}
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Commands.
const (
	CmdBan     = "ban"
	CmdUnban   = "unban"
	CmdList    = "list"
	CmdExplain = "explain"
	CmdStatus  = "status"
)

// Request is one command.
type Request struct {
	Cmd    string `json:"cmd"`
	IP     string `json:"ip,omitempty"`     // ban, unban, explain: address or CIDR
	For    string `json:"for,omitempty"`    // ban: Go duration; "" = escalation schedule
	Reason string `json:"reason,omitempty"` // ban
}

// Response is the answer to one Request.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Handler answers a request; the result is marshalled into Response.Result.
// A large list should be returned as a Stream.
type Handler func(ctx context.Context, req Request) (any, error)

// Stream is a list result written element by element, so that a large
// answer (the block list at 100k bans) is never built in memory: it is
// sent as the same JSON array a slice would be. It calls yield for each
// element and stops when yield returns false. An error (before or after
// some elements) breaks the reply line, so the client never takes a short
// list for a complete one.
type Stream func(yield func(v any) bool) error

// jsonAppender is an element that encodes itself as encoding/json would,
// without reflection (ban.Ban does: a list of 100k bans is mostly that).
type jsonAppender interface {
	AppendJSON(dst []byte) []byte
}

// Limits bound what clients of the socket can make the daemon spend. The
// socket is root-only, but a runaway script must still not exhaust memory
// or starve `status`.
type Limits struct {
	// MaxConns is the number of connections served at once; more get a
	// "busy" error and are closed. A connection costs a goroutine and
	// about 8 KB until it asks for a list. Default 512.
	MaxConns int
	// MaxRequests is the number of requests one connection may make.
	// Default 1000.
	MaxRequests int
	// MaxStreams is the number of Stream results written at once; other
	// list requests wait for a turn while cheap requests go on. Default 2.
	MaxStreams int
	// StreamWait is how long a list waits for its turn before it gets
	// "busy". Default 30s.
	StreamWait time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = 512
	}
	if l.MaxRequests <= 0 {
		l.MaxRequests = 1000
	}
	if l.MaxStreams <= 0 {
		l.MaxStreams = 2
	}
	if l.StreamWait <= 0 {
		l.StreamWait = 30 * time.Second
	}
	return l
}

// maxLine bounds one request.
const maxLine = 64 << 10

// Server serves a Handler on a Unix socket.
type Server struct {
	ln       net.Listener
	path     string
	handler  Handler
	log      *slog.Logger
	limits   Limits
	streams  chan struct{} // semaphore of MaxStreams
	refusing atomic.Int32  // refusals being written

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen creates the socket's directory (mode 0750) if needed, refuses to
// start when another daemon answers on path, removes a stale socket file,
// and listens with mode 0600.
func Listen(path string, h Handler, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another mxguard daemon is answering on it", path)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket: remove stale %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	s := &Server{ln: ln, path: path, handler: h, log: logger, conns: map[net.Conn]struct{}{}}
	s.SetLimits(Limits{})
	return s, nil
}

// SetLimits replaces the limits (zero fields: defaults). Call it before Serve.
func (s *Server) SetLimits(l Limits) {
	s.limits = l.withDefaults()
	s.streams = make(chan struct{}, s.limits.MaxStreams)
}

// Path is the socket path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close (then it returns nil).
func (s *Server) Serve(ctx context.Context) error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("control socket: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		if len(s.conns) >= s.limits.MaxConns {
			s.mu.Unlock()
			s.refuse(c)
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// idleTimeout closes a connection that sends nothing for this long;
// writeTimeout closes one that does not read its answer; streamTimeout
// bounds one whole stream, so a client that reads slowly cannot hold a
// turn for hours.
const (
	idleTimeout   = time.Minute
	writeTimeout  = 10 * time.Second
	streamTimeout = 2 * time.Minute
)

// maxRefusals bounds the refusals being written at once; past it a
// connection over MaxConns is closed without a word.
const maxRefusals = 16

// refuse answers a connection over MaxConns with an error, off the
// accept loop, and closes it.
func (s *Server) refuse(c net.Conn) {
	s.log.Warn("control socket busy: connection refused", "max_conns", s.limits.MaxConns)
	if s.refusing.Add(1) > maxRefusals {
		s.refusing.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer s.refusing.Add(-1)
		defer c.Close()
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_ = json.NewEncoder(c).Encode(Response{Error: fmt.Sprintf("busy: more than %d control connections; try again", s.limits.MaxConns)})
	}()
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), maxLine)
	w := bufio.NewWriterSize(c, 4096)
	for n := 0; ; n++ {
		_ = c.SetReadDeadline(time.Now().Add(idleTimeout))
		if !sc.Scan() {
			if err := sc.Err(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				_ = s.write(c, w, Response{Error: "bad request: " + err.Error()})
			}
			return
		}
		if n >= s.limits.MaxRequests {
			_ = s.write(c, w, Response{Error: fmt.Sprintf("too many requests on one connection (%d); reconnect", s.limits.MaxRequests)})
			return
		}
		var req Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			if s.write(c, w, Response{Error: "bad request: " + err.Error()}) != nil {
				return
			}
			continue
		}
		res, err := s.handler(ctx, req)
		s.log.Debug("control", "cmd", req.Cmd, "ip", req.IP, "err", err)
		if err != nil {
			err = s.write(c, w, Response{Error: err.Error()})
		} else if st, ok := res.(Stream); ok {
			err = s.writeStream(ctx, c, w, st)
		} else {
			resp := Response{OK: true}
			if res != nil {
				if resp.Result, err = json.Marshal(res); err != nil {
					resp.OK, resp.Error = false, "encode result: "+err.Error()
				}
			}
			err = s.write(c, w, resp)
		}
		if err != nil {
			return
		}
	}
}

// write sends one response line.
func (s *Server) write(c net.Conn, w *bufio.Writer, resp Response) error {
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		return err
	}
	return w.Flush()
}

// writeStream sends {"ok":true,"result":[...]} element by element, at most
// MaxStreams at a time. An element that fails to encode ends the
// connection mid-line: the client sees a broken reply, never a short list
// that looks complete.
func (s *Server) writeStream(ctx context.Context, c net.Conn, w *bufio.Writer, st Stream) error {
	wait := time.NewTimer(s.limits.StreamWait)
	defer wait.Stop()
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	case <-wait.C:
		return s.write(c, w, Response{Error: fmt.Sprintf("busy: %d lists are being sent; try again", s.limits.MaxStreams)})
	case <-ctx.Done():
		return ctx.Err()
	}
	deadline := time.Now().Add(streamTimeout)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	var err error
	put := func(b string) {
		if err == nil {
			_, err = w.WriteString(b)
		}
	}
	put(`{"ok":true,"result":[`)
	first := true
	serr := st(func(v any) bool {
		if !first {
			put(",")
		}
		first = false
		dl := time.Now().Add(writeTimeout)
		if dl.After(deadline) {
			dl = deadline
		}
		_ = c.SetWriteDeadline(dl)
		buf.Reset()
		if a, ok := v.(jsonAppender); ok {
			buf.Write(a.AppendJSON(buf.AvailableBuffer()))
		} else if err == nil {
			err = enc.Encode(v)
		}
		if err == nil { // without Encode's newline: the reply is one line
			_, err = w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
		}
		return err == nil
	})
	if err == nil && serr != nil {
		err = serr
	}
	if err != nil { // the line stays unfinished: the connection is closed
		s.log.Warn("control socket: stream broken off", "err", err)
		return fmt.Errorf("control socket: stream: %w", err)
	}
	put("]}\n")
	if err != nil {
		return fmt.Errorf("control socket: stream: %w", err)
	}
	return w.Flush()
}

// Close stops accepting, closes open connections, waits for their
// handlers and removes the socket file.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// NotRunningError means nothing answers on the socket.
type NotRunningError struct {
	Path string
	Err  error
}

func (e *NotRunningError) Error() string {
	cause := e.Err
	var op *net.OpError
	if errors.As(cause, &op) {
		cause = op.Err
		var se *os.SyscallError
		if errors.As(cause, &se) {
			cause = fmt.Errorf("%s: %w", se.Syscall, se.Err)
		}
	}
	return fmt.Sprintf("cannot reach mxguard daemon at %s: is it running? (%v)", e.Path, cause)
}

func (e *NotRunningError) Unwrap() error { return e.Err }

// Call sends one request to the daemon at path and decodes the result into
// out (may be nil). A daemon-side failure is returned as an error with the
// daemon's message; no daemon is a *NotRunningError.
func Call(ctx context.Context, path string, req Request, out any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
			return &NotRunningError{Path: path, Err: err}
		}
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("cannot reach mxguard daemon at %s: permission denied (run as root, or use --socket)", path)
		}
		return fmt.Errorf("cannot reach mxguard daemon at %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	br := bufio.NewReaderSize(c, 64<<10)
	if err := json.NewEncoder(c).Encode(req); err != nil {
		// A daemon over its connection limit answers "busy" and closes
		// without reading: its answer says more than a broken pipe.
		var resp Response
		if line, _ := br.ReadBytes('\n'); json.Unmarshal(line, &resp) == nil && resp.Error != "" {
			return errors.New(resp.Error)
		}
		return fmt.Errorf("control socket %s: send: %w", path, err)
	}
	line, err := br.ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		if ctx.Err() != nil {
			return fmt.Errorf("control socket %s: %w", path, ctx.Err())
		}
		return fmt.Errorf("control socket %s: read reply: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("control socket %s: bad reply: %w", path, err)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	if out != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, out); err != nil {
			return fmt.Errorf("control socket %s: decode %s reply: %w", path, req.Cmd, err)
		}
	}
	return nil
}
