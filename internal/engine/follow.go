package engine

import (
	"context"
	"time"

	"github.com/mxguard/mxguard/actions"
	"github.com/mxguard/mxguard/internal/tailer"
	"github.com/mxguard/mxguard/logparse"
)

// LineSource is the log follower (tailer.Follower): Run sends lines to out
// until ctx is done; Ack marks a line processed (its position is then
// checkpointed).
type LineSource interface {
	Run(ctx context.Context, out chan<- tailer.Line) error
	Ack(l tailer.Line)
}

// Follow runs src and handles every line it sends: parse (year anchor: the
// wall clock; stamps without a zone in loc, nil = Local), detect, decide,
// then Ack. It returns when ctx is done and src.Run has returned (with
// Run's error), or when src.Run fails. Lines received but not processed
// are not acknowledged, so a restart reads them again.
func (p *Pipeline) Follow(ctx context.Context, src LineSource, loc *time.Location) error {
	out := make(chan tailer.Line, 1024)
	errc := make(chan error, 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { errc <- src.Run(runCtx, out) }()
	parser := logparse.NewParser(loc, time.Time{})
	for {
		select {
		case l := <-out:
			p.HandleLine(ctx, parser, l.Text)
			src.Ack(l)
		case err := <-errc:
			return err
		case <-ctx.Done():
			for { // let Run finish (final checkpoint); drop what it still sends
				select {
				case err := <-errc:
					return err
				case <-out:
				}
			}
		}
	}
}

// Checkpoints adapts the bbolt store to tailer.Checkpointer (the store's
// Position has no rotated-file name; the tailer finds the rotated file by
// inode).
type Checkpoints struct{ Store *actions.Store }

// LoadPosition implements tailer.Checkpointer.
func (c Checkpoints) LoadPosition(path string) (tailer.Position, bool, error) {
	p, ok, err := c.Store.LoadPosition(path)
	if err != nil || !ok {
		return tailer.Position{}, ok, err
	}
	return tailer.Position{Dev: p.Dev, Inode: p.Inode, Offset: p.Offset, Size: p.Size, Head: p.Head}, true, nil
}

// SavePosition implements tailer.Checkpointer.
func (c Checkpoints) SavePosition(path string, p tailer.Position) error {
	return c.Store.SavePosition(path, actions.Position{Dev: p.Dev, Inode: p.Inode, Offset: p.Offset, Size: p.Size, Head: p.Head})
}
