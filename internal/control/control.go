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
type Handler func(ctx context.Context, req Request) (any, error)

// maxLine bounds one request.
const maxLine = 64 << 10

// Server serves a Handler on a Unix socket.
type Server struct {
	ln      net.Listener
	path    string
	handler Handler
	log     *slog.Logger

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
	return &Server{ln: ln, path: path, handler: h, log: logger, conns: map[net.Conn]struct{}{}}, nil
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

// idleTimeout closes a connection that sends nothing for this long.
const idleTimeout = time.Minute

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), maxLine)
	enc := json.NewEncoder(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idleTimeout))
		if !sc.Scan() {
			if err := sc.Err(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				_ = enc.Encode(Response{Error: "bad request: " + err.Error()})
			}
			return
		}
		var req Request
		resp := Response{}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Error = "bad request: " + err.Error()
		} else {
			res, err := s.handler(ctx, req)
			if err != nil {
				resp.Error = err.Error()
			} else {
				resp.OK = true
				if res != nil {
					if resp.Result, err = json.Marshal(res); err != nil {
						resp.OK, resp.Error = false, "encode result: "+err.Error()
					}
				}
			}
			s.log.Debug("control", "cmd", req.Cmd, "ip", req.IP, "ok", resp.OK, "err", resp.Error)
		}
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
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
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("control socket %s: send: %w", path, err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
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
