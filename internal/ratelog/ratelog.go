// Package ratelog logs warnings that a client can cause again and again
// (refused transfers, bad requests, refused peers) at most once per
// interval per kind, with the count of those left out, so that no client
// can flood the log.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// Log is a rate-limited Warn, safe for concurrent use.
type Log struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last time.Time
	held int
}

// New logs to log at most once per every (10 s if every ≤ 0) per kind.
func New(log *slog.Logger, every time.Duration) *Log {
	if every <= 0 {
		every = 10 * time.Second
	}
	return &Log{log: log, every: every, kinds: map[string]*kind{}}
}

// Warn logs msg with args unless kind was logged less than the interval
// ago; the next one logged carries not_logged_since_last=N.
func (r *Log) Warn(kind, msg string, args ...any) { r.WarnAt(time.Now(), kind, msg, args...) }

// WarnAt is Warn at the time now.
func (r *Log) WarnAt(now time.Time, kindName, msg string, args ...any) {
	r.mu.Lock()
	k := r.kinds[kindName]
	if k == nil {
		k = &kind{}
		r.kinds[kindName] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < r.every {
		k.held++
		r.mu.Unlock()
		return
	}
	held := k.held
	k.last, k.held = now, 0
	r.mu.Unlock()
	if held > 0 {
		args = append(args, "not_logged_since_last", held)
	}
	r.log.Warn(msg, args...)
}
