// Package sessions ends the live TCP sessions of a banned client at the
// kernel level: a firewall rule or an access map only stops new
// connections, while an open smtpd session can go on guessing passwords.
// Each ban dumps the host's established TCP sockets over netlink
// (SOCK_DIAG, as `ss` does) and destroys those from the banned prefix to
// the protected ports (SOCK_DESTROY, as `ss -K` does).
package sessions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/mxguard/mxguard/actions/ban"
)

// Config is the `actions.kill_sessions` section.
type Config struct {
	// Enabled: close the established sessions of every new ban.
	// Default: true.
	Enabled bool `yaml:"enabled"`
	// Ports are the local TCP ports whose sessions are closed; sockets on
	// other ports are never touched. Default: [25, 465, 587].
	Ports []int `yaml:"ports"`
}

// DefaultConfig returns the default (enabled) configuration.
func DefaultConfig() Config {
	return Config{Enabled: true, Ports: []int{25, 465, 587}}
}

// Validate reports every problem in the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Enabled && len(c.Ports) == 0 {
		errs = append(errs, errors.New("ports: empty; list the ports whose sessions a ban closes (or set enabled: false)"))
	}
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("ports: %d is not a TCP port", p))
		}
	}
	return errors.Join(errs...)
}

// Options are the run-time collaborators of a Killer.
type Options struct {
	Logger *slog.Logger // nil: discard
	// DryRun, when set, receives the sessions a ban would close, and
	// nothing is closed.
	DryRun io.Writer
	// Dial opens the NETLINK_SOCK_DIAG connection, one per ban. Nil: in
	// the caller's network namespace. Tests dial inside a namespace.
	Dial func() (*netlink.Conn, error)
}

// Killer is the ban.Action that closes sessions. Revoke and Sync do
// nothing: a session is closed once, when its client is banned.
type Killer struct {
	cfg   Config
	ports map[uint16]bool
	log   *slog.Logger
	dry   io.Writer
	dial  func() (*netlink.Conn, error)

	cannotClose sync.Once // the warning that sessions cannot be closed here
}

// New returns a Killer for cfg (validated here too).
func New(cfg Config, opts Options) (*Killer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &Killer{cfg: cfg, ports: map[uint16]bool{}, log: opts.Logger, dry: opts.DryRun, dial: opts.Dial}
	for _, p := range cfg.Ports {
		k.ports[uint16(p)] = true
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	k.log = k.log.With("action", k.Name())
	if k.dial == nil {
		k.dial = func() (*netlink.Conn, error) { return netlink.Dial(unix.NETLINK_SOCK_DIAG, nil) }
	}
	return k, nil
}

func (k *Killer) Name() string { return "kill_sessions" }

// Apply closes every established TCP session from b.Prefix to one of the
// protected ports. Without kernel support (no CONFIG_INET_DIAG_DESTROY)
// or without CAP_NET_ADMIN it warns once and succeeds: retrying cannot
// help, and the firewall still stops new connections.
func (k *Killer) Apply(ctx context.Context, b ban.Ban) error {
	if err := ban.CheckPrefix(b.Prefix); err != nil {
		return err
	}
	socks, err := k.Matching(ctx, b.Prefix)
	if k.dry != nil {
		if err != nil {
			fmt.Fprintf(k.dry, "kill_sessions: would close the TCP sessions from %s to ports %s (cannot list them: %v)\n", b.Prefix, k.portList(), err)
			return nil
		}
		if len(socks) == 0 {
			fmt.Fprintf(k.dry, "kill_sessions: would close the TCP sessions from %s to ports %s (none open now)\n", b.Prefix, k.portList())
		}
		for _, s := range socks {
			fmt.Fprintf(k.dry, "kill_sessions: would close %s\n", s)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if len(socks) == 0 {
		return nil
	}
	c, err := k.open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var errs []error
	closed := 0
	for _, s := range socks {
		err := destroy(c, s)
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			k.cannotClose.Do(func() {
				k.log.Warn("the kernel cannot close sockets (no CONFIG_INET_DIAG_DESTROY): live sessions of banned clients stay open until they end; the firewall stops only new connections",
					"ip", b.Prefix, "session", s.String())
			})
			return nil
		case errors.Is(err, unix.EPERM):
			k.cannotClose.Do(func() {
				k.log.Warn("not allowed to close sockets (needs CAP_NET_ADMIN): live sessions of banned clients stay open until they end; the firewall stops only new connections",
					"ip", b.Prefix, "session", s.String())
			})
			return nil
		case err != nil:
			errs = append(errs, err)
		default:
			closed++
			k.log.Debug("session closed", "ip", b.Prefix, "session", s.String())
		}
	}
	if closed > 0 {
		k.log.Info("sessions closed", "ip", b.Prefix, "count", closed)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sessions of %s: %w", b.Prefix, err)
	}
	return nil
}

// Matching lists the established TCP sockets from a client in p to one of
// the protected ports. IPv4 clients of dual-stack listeners appear as
// IPv4-mapped addresses on IPv6 sockets; they match IPv4 prefixes.
func (k *Killer) Matching(ctx context.Context, p netip.Prefix) ([]Socket, error) {
	c, err := k.open(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	families := []uint8{unix.AF_INET6}
	if p.Addr().Is4() {
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	var out []Socket
	for _, f := range families {
		socks, err := dumpEstablished(c, f)
		if err != nil {
			return nil, err
		}
		for _, s := range socks {
			if k.ports[s.Local.Port()] && p.Contains(s.Remote.Addr().Unmap()) {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// open dials the netlink connection with ctx's deadline on every call.
func (k *Killer) open(ctx context.Context) (*netlink.Conn, error) {
	c, err := k.dial()
	if err != nil {
		return nil, fmt.Errorf("open sock_diag netlink: %w", err)
	}
	if d, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(d); err != nil {
			c.Close()
			return nil, fmt.Errorf("sock_diag netlink deadline: %w", err)
		}
	}
	return c, nil
}

func (k *Killer) portList() string {
	ps := slices.Sorted(maps.Keys(k.ports))
	strs := make([]string, len(ps))
	for i, p := range ps {
		strs[i] = fmt.Sprint(p)
	}
	return strings.Join(strs, ",")
}

// Revoke does nothing: unbanning reopens nothing.
func (k *Killer) Revoke(context.Context, netip.Prefix) error { return nil }

// Sync does nothing: sessions are closed when a ban is decided.
func (k *Killer) Sync(context.Context, []ban.Ban) error { return nil }

// Close does nothing: each ban opens and closes its own connection.
func (k *Killer) Close() error { return nil }
