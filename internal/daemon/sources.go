package daemon

import (
	"context"
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/journal"
	"github.com/mxguard/mxguard/internal/tailer"
)

// logSources is what the pipeline follows: the log files (package
// tailer) and the systemd journal (package journal), either or both. A
// line goes back to the source it came from: journal lines carry a cursor.
type logSources struct {
	files   *tailer.Follower  // nil: no files
	journal *journal.Follower // nil: no journal
}

// buildSources makes the followers of cfg.Logs, with their positions in
// db (the block list).
func buildSources(cfg *config.Config, db *bolt.DB, d *Daemon) (*logSources, error) {
	var paths []string
	src := &logSources{}
	for _, l := range cfg.Logs {
		if !journal.IsJournal(l) {
			paths = append(paths, l)
			continue
		}
		cur, err := journal.NewBoltCursors(db)
		if err != nil {
			return nil, err
		}
		if src.journal, err = journal.New(journal.Config{Spec: l, FromStart: !cfg.Tail.FromEnd,
			CheckpointEvery: cfg.Tail.CheckpointInterval.D(), Logger: d.log}, cur); err != nil {
			return nil, err
		}
	}
	if len(paths) > 0 {
		cp, err := tailer.NewBoltCheckpoints(db)
		if err != nil {
			return nil, err
		}
		if src.files, err = tailer.New(tailer.Config{
			Paths: paths, Poll: cfg.Tail.Poll, FromStart: !cfg.Tail.FromEnd,
			CheckpointEvery: cfg.Tail.CheckpointInterval.D(), Logger: d.log,
		}, cp); err != nil {
			return nil, err
		}
	}
	return src, nil
}

// Run runs every source until ctx is done or one of them fails (which
// stops the others).
func (s *logSources) Run(ctx context.Context, out chan<- tailer.Line) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	run := func(f func(context.Context, chan<- tailer.Line) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f(ctx, out)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			cancel()
		}()
	}
	if s.files != nil {
		run(s.files.Run)
	}
	if s.journal != nil {
		run(s.journal.Run)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Ack implements pipeline.LineSource.
func (s *logSources) Ack(l tailer.Line) {
	if l.Cursor != "" {
		s.journal.Ack(l)
	} else {
		s.files.Ack(l)
	}
}

// AckWith saves l's position with what commit stores (committingStore).
func (s *logSources) AckWith(l tailer.Line, commit func(save func(*bolt.Tx) error) error) error {
	if l.Cursor != "" {
		return s.journal.AckWith(l, commit)
	}
	return s.files.AckWith(l, commit)
}

// Lookback implements pipeline.Lookback for the files; the journal has no
// warm-up (its detectors start empty at each start).
func (s *logSources) Lookback(ctx context.Context, older func(path, line string) bool, fn func(tailer.Line)) error {
	if s.files == nil {
		return nil
	}
	return s.files.Lookback(ctx, older, fn)
}
