package daemon

import (
	"context"
	"time"
)

// States of the restore of the active bans at start.
const (
	RestoreRunning = "running"
	RestoreDone    = "done"
	RestoreFailed  = "failed" // an action's first sync failed; it is retried in the background
)

// RestoreStatus is the restore of the active bans into the actions at
// start, as `mxguard status` shows it.
type RestoreStatus struct {
	State    string    `json:"state"`
	Bans     int       `json:"bans"` // active bans when it started
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Error    string    `json:"error,omitempty"`
}

// restoreTimeout bounds the wait for the actions' first syncs; a sync
// still failing after it goes on being retried by the Manager.
const restoreTimeout = time.Minute

// startRestore brings the actions in line with the active bans in the
// background: with thousands of bans a firewall sync takes seconds, and
// the control socket and the follower must not wait for it. Bans decided
// meanwhile are safe: each action's worker runs the sync before the
// applies queued behind it.
func (d *Daemon) startRestore() {
	ms, _ := d.mgr.Status()
	st := &RestoreStatus{State: RestoreRunning, Bans: ms.ActiveBans, Started: time.Now()}
	d.restore.Store(st)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithTimeout(d.runCtx, restoreTimeout)
		err := d.mgr.Restore(ctx)
		cancel()
		done := *st
		done.Finished = time.Now()
		done.State = RestoreDone
		switch {
		case err != nil && d.runCtx.Err() != nil:
			done.State, done.Error = RestoreFailed, "interrupted by the shutdown"
			d.log.Info("restore of active bans interrupted by the shutdown")
		case err != nil:
			done.State, done.Error = RestoreFailed, err.Error()
			d.log.Warn("restore of active bans incomplete; retrying in the background", "err", err,
				"bans", done.Bans, "took", done.Finished.Sub(done.Started).Round(time.Millisecond))
		default:
			d.log.Info("active bans restored", "bans", done.Bans,
				"took", done.Finished.Sub(done.Started).Round(time.Millisecond))
		}
		d.restore.Store(&done)
	}()
}

// restoreStatus is the restore's state now (zero before it started).
func (d *Daemon) restoreStatus() RestoreStatus {
	if st := d.restore.Load(); st != nil {
		return *st
	}
	return RestoreStatus{}
}
