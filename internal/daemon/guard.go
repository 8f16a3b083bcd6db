package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/smtpcheck"
	"github.com/mxguard/mxguard/smtpguard"
)

// buildGuard makes the guard; its events go through the daemon's pipeline
// (the same detectors and ban manager as the log lines).
func (d *Daemon) buildGuard(grey *greylist.Store, res smtpcheck.Resolver) error {
	g, err := smtpguard.New(*d.guardCfg, smtpguard.Deps{
		Logger: d.log.With("component", "guard"),
		// Events arrive only once Serve runs, after start set runCtx.
		Sink: func(ev event.Event) { d.pipe.HandleEvent(d.runCtx, ev) },
		// The Manager's ban index: every ban, unban and expiry is seen
		// at the client's next connection or command.
		Blocklist: d.mgr,
		// With logs tailed, Postfix's own reject lines (real client via
		// XCLIENT) are the evidence for its refusals; the guard's copies
		// would count them twice.
		UpstreamLogged: d.sources != nil,
		// shared with the policy service when both run (nil: its own)
		Greylist: grey,
		Resolver: res,
	})
	if err != nil {
		return &ConfigError{err}
	}
	// A ban also ends the banned client's live sessions, whoever made
	// it. The guard lives as long as the Manager: no unsubscribe.
	d.mgr.OnBan(func(b ban.Ban) {
		if !b.DryRun { // a dry run ends no session
			g.EndBanned(b.Prefix, b.Reason)
		}
	})
	d.guard = g
	return nil
}

// startGuard listens on guard.listen and serves until runCtx is done.
func (d *Daemon) startGuard() error {
	// Listen here, not in the goroutine: a port in use must stop the start.
	l, err := net.Listen("tcp", d.guardCfg.Listen)
	if err != nil {
		return fmt.Errorf("guard.listen %s: %w", d.guardCfg.Listen, err)
	}
	d.guardServing = true
	d.guardErr = d.serve("guard", d.guard, l, 30*time.Second)
	return nil
}

// frontDoor is a server the daemon runs on a listener of its own: the
// guard and the policy service.
type frontDoor interface {
	Serve(ctx context.Context, l net.Listener) error
	Shutdown(ctx context.Context) error
}

// serve runs srv on l until runCtx is done, then shuts it down within
// grace. A Serve that ends with an error is logged, and the error sent on
// the returned channel, which the main loop watches.
func (d *Daemon) serve(what string, srv frontDoor, l net.Listener, grace time.Duration) chan error {
	errc := make(chan error, 1)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		if err := srv.Serve(d.runCtx, l); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error(what+" stopped", "err", err)
			errc <- err
		}
	}()
	go func() {
		defer d.wg.Done()
		<-d.runCtx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return errc
}
