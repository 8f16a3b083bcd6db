// Package tailer follows growing log files across rotation, truncation and
// restarts, delivering every complete line exactly once.
//
// # Why the reading is done here and not by nxadm/tail
//
// github.com/nxadm/tail v1.4.11 cannot give "no line lost, none read twice":
// on a rename rotation it closes the old file before draining it
// (tail.reopen calls closeFile first), it notices copytruncate only when the
// size shrinks between two looks, it throws away a partial line on reopen,
// and a Line carries no file identity, so an offset cannot be tied to the
// inode it belongs to. So this package reads the files itself, with pread on
// its own *os.File, and keeps (dev, inode, offset, head fingerprint) for
// every line. Its FileWatchers (inotify or polling) are not used either:
// they call os.Exit through util.Fatal when a stat of the path fails with
// anything but "not exist" (a log directory at mode 000, a path component
// that is not a directory). Change notification is an inotify watch on the
// file's directory (fsnotify, see notify.go) behind the small notifier
// interface; it never ends the process. Notifications are only a latency
// optimisation: every follower also rechecks its file on a short timer (the
// poll in Config.Poll mode), so a lost or late notification delays a line
// but never loses it.
//
// # Semantics
//
//   - Only "\n"-terminated lines are emitted. A partial last line waits for
//     its end. A line longer than Config.MaxLineLength is skipped whole and
//     counted; memory stays bounded whatever the line length.
//   - Rename rotation (logrotate "create"): the old file stays open. When a
//     new file appears at the path it is opened at once, and as soon as it
//     has data the old file is read to its end and closed, then the new one
//     is read from offset 0. A writer still writing to the old file after it
//     has written to the new one loses those lines (rsyslog and postlogd
//     reopen on HUP, so this does not happen with them).
//   - copytruncate: detected when the size drops below the read offset, or
//     when the first bytes of the file (a fingerprint of up to 256 bytes,
//     checked after every read) change, which catches a file that grew back
//     past the old offset before it was looked at. The unread rest of the old
//     content is then read from the copy (path.1 or another path* file whose
//     head matches), and the live file is read again from 0. Lines written
//     between logrotate's copy and its truncate are lost by copytruncate
//     itself and cannot be recovered by any reader; prefer "create".
//   - Restart: with a checkpoint for the path, the follower continues at the
//     saved offset if the file is the same (inode and head) and not shorter.
//     Otherwise logrotate may have run, once or more, while it was stopped:
//     it looks for the checkpoint's file among the rotated files (path.N or
//     path-DATE, plain or compressed), reads it from the saved offset, then
//     every file rotated after it, oldest first (path.2.gz, path.1), then
//     the live file from 0. A plain rotated file is recognised by its inode
//     and head; a compressed one has a new inode and is recognised by its
//     decompressed head (.gz and .bz2; other formats cannot be read and
//     their lines are lost, with a warning). If no rotated file matches,
//     the file is taken as truncated while stopped: the rest is read from a
//     copy whose head matches if there is one, then the file from 0.
//   - A file that disappears, or cannot be opened or stat'ed (permission
//     denied, a path component that is not a directory), is logged and
//     retried on the recheck timer, and read from 0 when it is back.
//     Without a checkpoint an existing file is read from its end (after its
//     last complete line) unless Config.FromStart is set.
//   - Checkpoints record the position just after the last line the consumer
//     acknowledged (Follower.Ack), so a restart continues exactly after the
//     last processed line. Follower.AckWith saves a line's position in the
//     consumer's own bbolt transaction, with what it stored for the line.
//   - Follower.Lookback reads the lines before the checkpoints again, back
//     as far as the consumer needs (through rotated and compressed files),
//     for a consumer that rebuilds its state at start.
//
// Known limits: two rotations in a row faster than one recheck (250 ms) can
// skip the middle file; a rotated file compressed before it was drained
// while running is not read (use delaycompress). At restart, the order of
// rotated files comes from their names (path.N: highest N oldest; dated:
// name order), so one naming scheme per path is assumed; the checkpoint's
// file is recognised by its first 256 bytes, so it is not found if it was
// empty when the checkpoint was taken and has been compressed since, or
// if it was deleted (rotate count reached): then its unread lines and
// those of files rotated between it and the live file are lost, with a
// warning, and reading continues with the live file.
package tailer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nxadm/tail/ratelimiter"
	bolt "go.etcd.io/bbolt"
)

// Defaults for Config.
const (
	DefaultMaxLineLength   = 64 << 10
	DefaultCheckpointEvery = time.Second
)

// headLen is the length of the head fingerprint kept per file.
const headLen = 256

// recheckEvery is how often a follower looks at its file without being
// notified. Tests may lower it.
var recheckEvery = 250 * time.Millisecond

// Position is a place in one file, just after a complete line.
// It is what a Checkpointer stores; it marshals to JSON.
type Position struct {
	Dev    uint64 `json:"dev"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"` // next byte to read
	Size   int64  `json:"size"`   // file size when last looked at
	Head   []byte `json:"head,omitempty"`
	// Partial is the consumer's: when not 0, the line that ends here had
	// only this many of its effects saved with the position (AckWith),
	// and the rest were not yet; 0: the line was processed in full.
	Partial int `json:"partial,omitempty"`
}

// Line is one complete line, without its "\n".
type Line struct {
	Text string
	Path string   // the configured path; the checkpoint key
	File string   // the file it was read from: Path resolved, or a rotated name such as Path.1
	Pos  Position // just after this line, in File; Pos.Head is shared, do not modify
	// Cursor is set, instead of File and Pos, for a line read from the
	// systemd journal (package journal): the entry's __CURSOR.
	Cursor string
}

// Checkpointer stores positions by configured path.
type Checkpointer interface {
	LoadPosition(path string) (Position, bool, error)
	SavePosition(path string, p Position) error
}

// Config configures a Follower.
type Config struct {
	Paths []string // files to follow
	// Poll stats the files every 250 ms instead of using inotify (network
	// file systems, or when inotify is unavailable).
	Poll bool
	// FromStart reads a file that has no checkpoint from its beginning.
	// Default: from its end (after the last complete line).
	FromStart bool
	// MaxLineLength is the longest line delivered, in bytes without "\n".
	// Longer lines are skipped and counted. Default: 64 KiB.
	MaxLineLength int
	// CheckpointEvery is how often acknowledged positions are saved.
	// Default: 1s.
	CheckpointEvery time.Duration
	Logger          *slog.Logger // nil: discard
}

// FileStats describes one followed path.
type FileStats struct {
	Path        string `json:"path"`         // configured path
	File        string `json:"file"`         // file being read (symlink resolved, or a rotated name)
	Inode       uint64 `json:"inode"`        //
	Offset      int64  `json:"offset"`       // next byte to read
	Size        int64  `json:"size"`         // size when last looked at
	Lag         int64  `json:"lag"`          // Size - Offset
	Lines       uint64 `json:"lines"`        // lines emitted
	Skipped     uint64 `json:"skipped"`      // lines longer than MaxLineLength
	Rotations   uint64 `json:"rotations"`    // switches to a new file
	Truncations uint64 `json:"truncations"`  // copytruncate or other truncation seen
	Missing     bool   `json:"missing"`      // the path does not exist now
	Acked       int64  `json:"acked_offset"` // offset of the last acknowledged line
}

// Stats is a snapshot of all followed paths.
type Stats struct {
	Files []FileStats `json:"files"`
}

// Follower follows Config.Paths. Create it with New, run it once with Run.
type Follower struct {
	cfg   Config
	cp    Checkpointer
	log   *slog.Logger
	files []*file

	newNotifier func(path string, poll bool, log *slog.Logger) notifier
	autoAck     bool

	started atomic.Bool

	mu   sync.Mutex // guards acks
	acks map[string]*ackState
	// saveMu is held while positions are saved, so that a checkpoint
	// cannot write an older position over one AckWith saved.
	saveMu sync.Mutex
}

type ackState struct {
	pos   Position
	have  bool
	dirty bool
}

// New checks cfg and returns a Follower. cp may be nil (no checkpoints).
func New(cfg Config, cp Checkpointer) (*Follower, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("tailer: no paths")
	}
	if cfg.MaxLineLength <= 0 {
		cfg.MaxLineLength = DefaultMaxLineLength
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Follower{cfg: cfg, cp: cp, log: log, acks: make(map[string]*ackState),
		newNotifier: newDirNotifier}
	if !cfg.Poll && !inotifyAvailable() {
		log.Warn("tailer: inotify unavailable, polling instead")
		f.cfg.Poll = true
	}
	seen := make(map[string]bool)
	for _, p := range cfg.Paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("tailer: %s: %w", p, err)
		}
		if seen[abs] {
			return nil, fmt.Errorf("tailer: %s: listed twice", p)
		}
		seen[abs] = true
		f.files = append(f.files, newFile(f, p, abs))
		f.acks[p] = &ackState{}
	}
	return f, nil
}

// Run follows the files until ctx is done, sending lines to out (never
// closed). It saves acknowledged positions every CheckpointEvery and once
// more before returning. It returns nil after ctx is done, or an error if a
// checkpoint could not be loaded or the final save failed.
//
// Lines still in out when Run returns were not acknowledged; if the consumer
// processes and acknowledges them afterwards, it should call Checkpoint.
func (f *Follower) Run(ctx context.Context, out chan<- Line) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("tailer: Run called twice")
	}
	// Load every checkpoint first: a broken store is a setup error.
	for _, fl := range f.files {
		if f.cp == nil {
			continue
		}
		pos, ok, err := f.cp.LoadPosition(fl.path)
		if err != nil {
			return fmt.Errorf("tailer: load position of %s: %w", fl.path, err)
		}
		if ok {
			fl.saved, fl.haveSaved = pos, true
			f.mu.Lock()
			f.acks[fl.path] = &ackState{pos: pos, have: true}
			f.mu.Unlock()
		}
	}

	var wg sync.WaitGroup
	for _, fl := range f.files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fl.run(ctx, out)
		}()
	}
	t := time.NewTicker(f.cfg.CheckpointEvery)
	defer t.Stop()
	// A checkpoint that keeps failing (a full disk) is logged once a
	// minute, not at every tick.
	warn := ratelimiter.NewLeakyBucket(1, time.Minute)
	failed := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			err := f.Checkpoint()
			if err == nil {
				failed = 0
				continue
			}
			failed++
			if warn.Pour(1) {
				f.log.Warn("tailer: checkpoint failed", "err", err, "failures", failed)
			}
		}
	}
	wg.Wait()
	if err := f.Checkpoint(); err != nil {
		return fmt.Errorf("tailer: final checkpoint: %w", err)
	}
	return nil
}

// Ack records that l was processed. Call it in the order lines were
// received; the next checkpoint stores the position just after l.
func (f *Follower) Ack(l Line) {
	f.mu.Lock()
	a := f.acks[l.Path]
	if a != nil {
		a.pos, a.have, a.dirty = l.Pos, true, true
	}
	f.mu.Unlock()
}

// AckWith acknowledges l and saves its position at once, in the bbolt
// transaction that commit runs: commit calls save inside its own write
// transaction on the checkpoint database (which must be BoltCheckpoints').
// A consumer stores an effect of l and l's position together with it, so
// that after a crash l is neither processed again nor lost; l.Pos.Partial
// says how much of l that was. When commit fails nothing is acknowledged.
func (f *Follower) AckWith(l Line, commit func(save func(*bolt.Tx) error) error) error {
	bc, ok := f.cp.(*BoltCheckpoints)
	if !ok {
		return errors.New("tailer: AckWith needs bbolt checkpoints")
	}
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	if err := commit(func(tx *bolt.Tx) error { return bc.saveTx(tx, l.Path, l.Pos) }); err != nil {
		return err
	}
	f.mu.Lock()
	if a := f.acks[l.Path]; a != nil {
		a.pos, a.have, a.dirty = l.Pos, true, false
	}
	f.mu.Unlock()
	return nil
}

// samePosition tells whether a and b are the same acknowledged place.
func samePosition(a, b Position) bool {
	return a.Offset == b.Offset && a.Inode == b.Inode && a.Dev == b.Dev && a.Partial == b.Partial
}

// setStart records the position a follower starts from when there was no
// checkpoint (reading from the end), so that a restart does not skip lines
// that arrived in between.
func (f *Follower) setStart(path string, p Position) {
	f.mu.Lock()
	if a := f.acks[path]; a != nil && !a.have {
		a.pos, a.have, a.dirty = p, true, true
	}
	f.mu.Unlock()
}

// Checkpoint saves the acknowledged positions that changed since the last
// save. Run calls it; call it yourself after acknowledging lines once Run
// has returned.
func (f *Follower) Checkpoint() error {
	if f.cp == nil {
		return nil
	}
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	type item struct {
		path string
		pos  Position
	}
	var todo []item
	f.mu.Lock()
	for p, a := range f.acks {
		if a.dirty {
			todo = append(todo, item{p, a.pos})
		}
	}
	f.mu.Unlock()
	var errs []error
	for _, it := range todo {
		if err := f.cp.SavePosition(it.path, it.pos); err != nil {
			errs = append(errs, fmt.Errorf("save position of %s: %w", it.path, err))
			continue
		}
		f.mu.Lock()
		if a := f.acks[it.path]; samePosition(a.pos, it.pos) {
			a.dirty = false
		}
		f.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Stats returns a snapshot of every followed path.
func (f *Follower) Stats() Stats {
	var s Stats
	for _, fl := range f.files {
		fl.mu.Lock()
		st := fl.stats
		fl.mu.Unlock()
		f.mu.Lock()
		if a := f.acks[fl.path]; a != nil && a.have {
			st.Acked = a.pos.Offset
		}
		f.mu.Unlock()
		s.Files = append(s.Files, st)
	}
	return s
}

// Follow is New plus Run for consumers that do not acknowledge: a line
// counts as processed once it is in out.
func Follow(ctx context.Context, cfg Config, cp Checkpointer, out chan<- Line) error {
	f, err := New(cfg, cp)
	if err != nil {
		return err
	}
	f.autoAck = true
	return f.Run(ctx, out)
}
