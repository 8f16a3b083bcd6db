package journal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/internal/tailer"
)

// Config configures a Follower.
type Config struct {
	// Spec is the logs entry ("journal" or "journal:ID1,ID2"): the filter,
	// the key of the saved cursor and the Path of every line.
	Spec string
	// Journalctl is the program run (default "journalctl", found in PATH).
	Journalctl string
	// FromStart reads from the oldest entry when no cursor is saved;
	// default: only entries that arrive from now on.
	FromStart bool
	// CheckpointEvery is how often the acknowledged cursor is saved.
	// Default: 1s.
	CheckpointEvery time.Duration
	// RestartDelay is the first wait before journalctl is started again
	// after it exited; it doubles up to a minute. Default: 1s.
	RestartDelay time.Duration
	Logger       *slog.Logger // nil: discard
}

// Follower follows the local journal, filtered to Postfix, as a
// pipeline.LineSource: Run sends each entry as a tailer.Line (Cursor set,
// Path = Config.Spec); Ack marks it processed, and the cursor of the last
// acknowledged entry is saved, so a restart continues just after it.
type Follower struct {
	cfg    Config
	filter Filter
	cp     *BoltCursors // nil: nothing saved
	log    *slog.Logger

	started atomic.Bool
	mu      sync.Mutex // guards acked, dirty
	acked   string
	dirty   bool
	saveMu  sync.Mutex // held while saving: an older cursor never overwrites a newer one
	lines   atomic.Uint64
	starts  atomic.Uint64
}

// New checks cfg. cp may be nil (no cursor kept).
func New(cfg Config, cp *BoltCursors) (*Follower, error) {
	f, err := NewFilter(cfg.Spec)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if cfg.Journalctl == "" {
		cfg.Journalctl = "journalctl"
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = time.Second
	}
	if cfg.RestartDelay <= 0 {
		cfg.RestartDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, filter: f, cp: cp, log: log.With("log", cfg.Spec)}, nil
}

// Lines is how many entries Run has sent.
func (f *Follower) Lines() uint64 { return f.lines.Load() }

// Starts is how many times journalctl was started.
func (f *Follower) Starts() uint64 { return f.starts.Load() }

// Run follows the journal until ctx is done, sending lines to out (never
// closed), saving the acknowledged cursor every CheckpointEvery and once
// more before returning. journalctl is started again, after a growing
// delay, whenever it exits. It returns nil after ctx is done, or an error
// if the saved cursor cannot be loaded or the final save fails.
func (f *Follower) Run(ctx context.Context, out chan<- tailer.Line) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("journal: Run called twice")
	}
	cursor := ""
	if f.cp != nil {
		var err error
		if cursor, err = f.cp.Load(f.cfg.Spec); err != nil {
			return fmt.Errorf("journal: %w", err)
		}
	}
	f.mu.Lock()
	f.acked = cursor
	f.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.checkpointLoop(ctx)
	}()
	start := startAt{fromStart: f.cfg.FromStart}
	if !start.fromStart {
		start.since = time.Now()
	}
	delay := f.cfg.RestartDelay
	for ctx.Err() == nil {
		began := time.Now()
		last, sent, err := f.runOnce(ctx, out, cursor, start)
		if last != "" {
			cursor = last // the child is started again after what it sent
		}
		if ctx.Err() != nil {
			break
		}
		if sent == 0 && cursor != "" && errors.Is(err, errBadCursor) {
			f.log.Warn("journal: the saved cursor is not valid; reading from the oldest entry", "cursor", cursor)
			cursor, start = "", startAt{fromStart: true}
			continue
		}
		if time.Since(began) > time.Minute {
			delay = f.cfg.RestartDelay
		}
		f.log.Warn("journal: journalctl exited; starting it again", "err", err, "in", delay.String())
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Minute)
	}
	wg.Wait()
	if err := f.Checkpoint(); err != nil {
		return fmt.Errorf("journal: final checkpoint: %w", err)
	}
	return nil
}

var errBadCursor = errors.New("journalctl cannot seek to the cursor")

// startAt is where reading starts when there is no cursor.
type startAt struct {
	fromStart bool      // the oldest entry
	since     time.Time // else: entries from this time on (the first start)
}

// args are journalctl's arguments to continue after cursor (inclusive:
// the entry at the cursor is sent again and dropped by runOnce, which so
// learns whether it still exists). Without a cursor, a follower that
// starts at the end asks for the entries since its first start, so that a
// journalctl that exits before its first entry loses none.
func (f *Follower) args(cursor string, start startAt) []string {
	a := []string{"--follow", "--output=json", "--no-pager", "--quiet", "--no-tail"}
	switch {
	case cursor != "":
		a = append(a, "--cursor="+cursor)
	case !start.fromStart:
		a = append(a, fmt.Sprintf("--since=@%d", start.since.Unix()))
	}
	return append(a, f.filter.Matches()...)
}

// runOnce runs journalctl once, until it exits or ctx is done, and returns
// the cursor of the last entry it read and how many lines it sent.
func (f *Follower) runOnce(ctx context.Context, out chan<- tailer.Line, cursor string, start startAt) (last string, sent int, err error) {
	cmd := exec.CommandContext(ctx, f.cfg.Journalctl, f.args(cursor, start)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	stderr := &stderrLog{log: f.log}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, fmt.Errorf("journalctl: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return "", 0, fmt.Errorf("start %s: %w", f.cfg.Journalctl, err)
	}
	f.starts.Add(1)
	first := cursor != ""
	r := bufio.NewReaderSize(stdout, 64<<10)
	var readErr error
	for {
		b, rerr := r.ReadBytes('\n')
		if len(b) > 0 && b[len(b)-1] == '\n' {
			e, perr := ParseEntry(b)
			switch {
			case perr != nil:
				f.log.Warn("journal: entry skipped", "err", perr)
			case first && e.Cursor == cursor:
				first = false // the entry processed last time
			default:
				if first {
					f.log.Warn("journal: the saved cursor is no longer in the journal (vacuumed?); reading from the oldest entry",
						"cursor", cursor)
					first = false
				}
				if !f.filter.Match(e.Identifier) {
					last = e.Cursor
					continue
				}
				select {
				case out <- tailer.Line{Text: e.Line(), Path: f.cfg.Spec, File: "journal", Cursor: e.Cursor}:
					last = e.Cursor
					sent++
					f.lines.Add(1)
				case <-ctx.Done():
					_ = cmd.Wait()
					return last, sent, ctx.Err()
				}
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				readErr = rerr
			}
			break
		}
	}
	werr := cmd.Wait()
	if strings.Contains(stderr.lastLine(), "Failed to seek to cursor") {
		return last, sent, fmt.Errorf("%w: %s", errBadCursor, stderr.lastLine())
	}
	return last, sent, errors.Join(readErr, werr)
}

func (f *Follower) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(f.cfg.CheckpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := f.Checkpoint(); err != nil {
				f.log.Warn("journal: checkpoint failed", "err", err)
			}
		}
	}
}

// Ack records that l was processed; call it in the order lines came.
func (f *Follower) Ack(l tailer.Line) {
	if l.Cursor == "" {
		return
	}
	f.mu.Lock()
	f.acked, f.dirty = l.Cursor, true
	f.mu.Unlock()
}

// AckWith acknowledges l and saves its cursor at once, inside the bbolt
// write transaction commit runs (on the database of the Follower's
// BoltCursors): what the consumer stores for l and l's cursor are saved
// together. A line whose decisions a crash cut short (l.Pos.Partial) is
// not read again: its remaining decisions are lost, as the journal has no
// warm-up (see the package documentation of pipeline.Warm).
func (f *Follower) AckWith(l tailer.Line, commit func(save func(*bolt.Tx) error) error) error {
	if f.cp == nil {
		return errors.New("journal: AckWith needs bbolt cursors")
	}
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	if err := commit(func(tx *bolt.Tx) error { return f.cp.saveTx(tx, f.cfg.Spec, l.Cursor) }); err != nil {
		return err
	}
	f.mu.Lock()
	f.acked, f.dirty = l.Cursor, false
	f.mu.Unlock()
	return nil
}

// Checkpoint saves the acknowledged cursor if it changed.
func (f *Follower) Checkpoint() error {
	if f.cp == nil {
		return nil
	}
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	f.mu.Lock()
	cur, dirty := f.acked, f.dirty
	f.mu.Unlock()
	if !dirty {
		return nil
	}
	if err := f.cp.Save(f.cfg.Spec, cur); err != nil {
		return err
	}
	f.mu.Lock()
	if f.acked == cur {
		f.dirty = false
	}
	f.mu.Unlock()
	return nil
}

// stderrLog logs journalctl's stderr line by line and keeps the last.
type stderrLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	buf  []byte
	last string
}

func (s *stderrLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	for {
		i := strings.IndexByte(string(s.buf), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(s.buf[:i]))
		s.buf = s.buf[i+1:]
		if line != "" {
			s.last = line
			s.log.Warn("journalctl", "stderr", line)
		}
	}
	if len(s.buf) > 4096 { // a line without end: log it anyway
		s.last = string(s.buf)
		s.log.Warn("journalctl", "stderr", s.last)
		s.buf = s.buf[:0]
	}
	return len(p), nil
}

func (s *stderrLog) lastLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}
