package tailer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// maxLookbackFiles bounds how many files Lookback goes back through: the
// checkpoint's file and the ones rotated before it. A window of hours
// spans two files at most with daily or weekly rotation; the bound keeps a
// log without time stamps from decompressing every archive at start.
const maxLookbackFiles = 3

// lookbackChunk is how much Lookback reads at a time going backwards.
const lookbackChunk = 64 << 10

// Lookback reads again lines that came before the checkpoints, for a
// consumer that rebuilds state at start (the detectors' sliding windows).
// For each path with a checkpoint, it goes back from the checkpoint line by
// line, through the checkpoint's file (wherever rotation put it,
// compressed included) and the files rotated before it, until older(path,
// line) reports a line older than needed; then it calls fn with the lines
// after that one up to the checkpoint, oldest first. The last line's Pos is
// the checkpoint itself (Partial included). Paths without a checkpoint, or
// whose checkpoint's file cannot be found, are skipped and logged. Call it
// before Run. older is asked about each path's checkpoint line first, then
// about the others going back (forwards within a compressed file).
func (f *Follower) Lookback(ctx context.Context, older func(path, line string) bool, fn func(Line)) error {
	if f.cp == nil {
		return nil
	}
	for _, fl := range f.files {
		sp, ok, err := f.cp.LoadPosition(fl.path)
		if err != nil {
			return fmt.Errorf("tailer: load position of %s: %w", fl.path, err)
		}
		if !ok || sp.Offset == 0 {
			continue
		}
		if err := fl.lookback(ctx, sp, func(line string) bool { return older(fl.path, line) }, fn); err != nil {
			return err
		}
	}
	return nil
}

// lookbackSource is one file Lookback reads: bytes [0, end) of a plain or
// compressed file; end < 0 is its end.
type lookbackSource struct {
	rotatedFile
	end int64
}

func (fl *file) lookback(ctx context.Context, sp Position, older func(string) bool, fn func(Line)) error {
	fl.resolve()
	srcs := fl.lookbackSources(sp)
	if len(srcs) == 0 {
		fl.log.Warn("tailer: the checkpoint's file was not found, lines before the checkpoint are not read again",
			"inode", sp.Inode, "offset", sp.Offset)
		return nil
	}
	if srcs[0].ext != "" {
		// A compressed file is read forwards: ask about the checkpoint's
		// line first all the same, the consumer's reference.
		var last string
		found := false
		if err := fl.eachLine(srcs[0], 0, func(text string, _ int64, _ *openFile) bool {
			last, found = text, true
			return true
		}); err == nil && found {
			older(last)
		}
	}
	// Find the last line older than needed, newest file first.
	first, from := len(srcs)-1, int64(0)
	for i, s := range srcs {
		off, found, err := fl.lastOlder(s, older)
		if err != nil {
			fl.log.Warn("tailer: cannot read a file again before the checkpoint", "real", s.name, "err", err)
			first, from = i-1, 0
			break
		}
		if found {
			first, from = i, off
			break
		}
	}
	for i := first; i >= 0; i-- {
		s := srcs[i]
		if i != first {
			from = 0
		}
		err := fl.eachLine(s, from, func(text string, end int64, of *openFile) bool {
			l := Line{Text: text, Path: fl.path, File: s.name, Pos: of.pos(end)}
			if i == 0 && end == sp.Offset {
				l.Pos = sp
			}
			fn(l)
			return ctx.Err() == nil
		})
		if err != nil {
			fl.log.Warn("tailer: cannot read a file again before the checkpoint", "real", s.name, "err", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// lookbackSources lists the checkpoint's file up to the checkpoint, then
// the files rotated before it, newest first; nil when the checkpoint's
// file is gone.
func (fl *file) lookbackSources(sp Position) []lookbackSource {
	files := fl.rotatedFiles() // oldest first
	at := -1                   // index of the checkpoint's file in files; len(files) = the live file
	if fi, err := os.Stat(fl.real); err == nil {
		if _, ino := fileID(fi); ino == sp.Inode && fi.Size() >= sp.Offset {
			if f, err := os.Open(fl.real); err == nil {
				if bytes.HasPrefix(fl.readHead(f), sp.Head) {
					at = len(files)
				}
				f.Close()
			}
		}
	}
	for _, copied := range []bool{false, true} { // a copy (copytruncate) has a new inode
		for i := len(files) - 1; at < 0 && i >= 0; i-- {
			if fl.isCheckpointFile(files[i], sp, copied) {
				at = i
			}
		}
	}
	if at < 0 {
		return nil
	}
	live := rotatedFile{name: fl.real, num: -1}
	cur := live
	if at < len(files) {
		cur = files[at]
	}
	srcs := []lookbackSource{{rotatedFile: cur, end: sp.Offset}}
	for i := at - 1; i >= 0 && len(srcs) < maxLookbackFiles; i-- {
		srcs = append(srcs, lookbackSource{rotatedFile: files[i], end: -1})
	}
	return srcs
}

// lastOlder returns the offset just after the last line of s that older
// reports, and whether there is one. A plain file is read backwards from
// s.end, so only the lines that are needed are read; a compressed one from
// its start.
func (fl *file) lastOlder(s lookbackSource, older func(string) bool) (int64, bool, error) {
	if s.ext != "" {
		var at int64
		found := false
		err := fl.eachLine(s, 0, func(text string, end int64, _ *openFile) bool {
			if older(text) {
				at, found = end, true
			}
			return true
		})
		return at, found, err
	}
	f, err := os.Open(s.name)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	end := s.end
	if end < 0 {
		fi, err := f.Stat()
		if err != nil {
			return 0, false, err
		}
		end = fi.Size()
	}
	return scanBack(f, end, fl.maxLine, older)
}

// scanBack reads r backwards from end (just after a line) and returns the
// offset just after the first line, going back, that older reports.
// Lines longer than maxLine are passed over; a last line without its
// "\n" is not a line.
func scanBack(r io.ReaderAt, end int64, maxLine int, older func(string) bool) (int64, bool, error) {
	pos := end
	var rest []byte // bytes [pos, pos+len(rest)): a line start not yet found
	long := false   // rest is inside a line longer than maxLine
	for {
		// The complete lines in rest end at each '\n' after its first one.
		for {
			i := bytes.LastIndexByte(rest[:max(len(rest)-1, 0)], '\n')
			if i < 0 {
				break
			}
			lineEnd := pos + int64(len(rest))
			if line := rest[i+1 : len(rest)-1]; !long && rest[len(rest)-1] == '\n' && len(line) <= maxLine && older(string(line)) {
				return lineEnd, true, nil
			}
			rest, long = rest[:i+1], false
		}
		if pos == 0 {
			if n := len(rest); n > 0 && rest[n-1] == '\n' && !long && n-1 <= maxLine && older(string(rest[:n-1])) {
				return int64(n), true, nil
			}
			return 0, false, nil
		}
		n := min(int64(lookbackChunk), pos)
		pos -= n
		chunk := make([]byte, n, n+int64(len(rest)))
		if _, err := r.ReadAt(chunk, pos); err != nil && err != io.EOF {
			return 0, false, err
		}
		if !bytes.Contains(chunk, []byte{'\n'}) && len(rest)+len(chunk) > maxLine+1 {
			// inside a line too long to be delivered: keep only its last byte
			rest, long = rest[max(len(rest)-1, 0):], true
			continue
		}
		rest = append(chunk, rest...)
	}
}

// eachLine calls fn with the lines of s from offset from to s.end, each
// with the offset just after it and the open file, until fn returns false.
func (fl *file) eachLine(s lookbackSource, from int64, fn func(text string, end int64, of *openFile) bool) error {
	of, err := fl.openRotated(s.rotatedFile, from)
	if err != nil {
		return err
	}
	defer of.close()
	var r io.Reader
	if of.stream != nil {
		r = of.stream
	} else {
		r = io.NewSectionReader(of.f, from, 1<<62)
	}
	if s.end >= 0 {
		r = io.LimitReader(r, s.end-from)
	}
	br := bufio.NewReaderSize(r, fl.bufSize)
	off, skipping := from, false
	for {
		b, err := br.ReadSlice('\n')
		off += int64(len(b))
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			skipping = true
			continue
		case err == io.EOF:
			return nil // an incomplete last line is not a line
		case err != nil:
			return err
		case skipping:
			skipping = false
			continue
		}
		if len(b)-1 > fl.maxLine {
			continue
		}
		if !fn(string(b[:len(b)-1]), off, of) {
			return nil
		}
	}
}
