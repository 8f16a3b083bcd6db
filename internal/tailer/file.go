package tailer

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// openFile is one open file and how far it has been read.
type openFile struct {
	f        *os.File
	name     string
	dev, ino uint64
	off      int64  // just after the last complete line consumed
	readPos  int64  // next byte to read; off + len(buf) unless skipping
	size     int64  // size when last looked at
	head     []byte // first bytes of the file; replaced, never modified in place
	skipping bool   // inside a line longer than the limit
	buf      []byte // bytes [off, readPos) while not skipping
	// stream, when set, is read instead of f: the decompressed content of
	// a compressed rotated file, positioned at readPos. Offsets and head
	// are then in decompressed bytes.
	stream io.Reader
}

func (of *openFile) pos(off int64) Position {
	return Position{Dev: of.dev, Inode: of.ino, Offset: off,
		Size: max(of.size, of.readPos), Head: of.head}
}

func (of *openFile) close() {
	if of != nil && of.f != nil {
		of.f.Close()
		of.f = nil
	}
}

// file follows one configured path. Only its own goroutine touches it,
// except stats (under mu).
type file struct {
	fo      *Follower
	path    string // as configured: the checkpoint key
	abs     string // absolute
	real    string // abs with symlinks resolved, when last resolved
	log     *slog.Logger
	maxLine int
	bufSize int
	scratch []byte

	saved     Position
	haveSaved bool

	cur     *openFile
	pending []*openFile // files seen at path after cur, oldest first
	missing bool
	lastErr string

	lines, skipped, rotations, truncations uint64
	checks                                 atomic.Uint64 // for tests

	mu    sync.Mutex
	stats FileStats
}

func newFile(fo *Follower, path, abs string) *file {
	return &file{fo: fo, path: path, abs: abs, real: abs,
		log:     fo.log.With("file", path),
		maxLine: fo.cfg.MaxLineLength,
		bufSize: max(fo.cfg.MaxLineLength+1, 32<<10),
		scratch: make([]byte, headLen),
		stats:   FileStats{Path: path}}
}

func (fl *file) run(ctx context.Context, out chan<- Line) {
	fl.resolve()
	n := fl.fo.newNotifier(fl.real, fl.fo.cfg.Poll, fl.log)
	defer n.Close()
	defer fl.closeAll()
	t := time.NewTicker(recheckEvery)
	defer t.Stop()
	ok := fl.start(ctx, out)
	for ok {
		fl.publish()
		select {
		case <-ctx.Done():
			return
		case <-n.C():
		case <-t.C:
		}
		ok = fl.check(ctx, out)
		fl.checks.Add(1)
	}
}

func (fl *file) closeAll() {
	fl.cur.close()
	for _, p := range fl.pending {
		p.close()
	}
	fl.publish()
}

// resolve follows symlinks of the configured path and logs a change.
func (fl *file) resolve() string {
	r, err := filepath.EvalSymlinks(fl.abs)
	if err != nil {
		return fl.real
	}
	if r != fl.real {
		fl.log.Info("tailer: path resolves to another file", "target", r)
		fl.real = r
	}
	return r
}

// warnOnce logs a repeated error only when it changes.
func (fl *file) warnOnce(msg string, err error) {
	if s := msg + err.Error(); s != fl.lastErr {
		fl.lastErr = s
		fl.log.Warn(msg, "err", err)
	}
}

// openPath opens the file now at the configured path, at offset 0.
func (fl *file) openPath() *openFile {
	name := fl.resolve()
	f, err := os.Open(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			fl.warnOnce("tailer: cannot open", err)
		}
		return nil
	}
	of, err := fl.newOpenFile(f, name, 0)
	if err != nil {
		fl.warnOnce("tailer: cannot stat", err)
		f.Close()
		return nil
	}
	return of
}

func (fl *file) newOpenFile(f *os.File, name string, off int64) (*openFile, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	of := &openFile{f: f, name: name, off: off, readPos: off, size: fi.Size()}
	of.dev, of.ino = fileID(fi)
	of.head = fl.readHead(f)
	return of, nil
}

func (fl *file) readHead(f *os.File) []byte {
	n, _ := f.ReadAt(fl.scratch[:headLen], 0)
	return bytes.Clone(fl.scratch[:n])
}

// headOK checks that the file still starts with the bytes it started with
// (it was not truncated and rewritten) and extends the fingerprint.
func (fl *file) headOK(of *openFile) bool {
	n, err := of.f.ReadAt(fl.scratch[:headLen], 0)
	if err != nil && err != io.EOF {
		return true // cannot tell; the size check still applies
	}
	got := fl.scratch[:n]
	if !bytes.HasPrefix(got, of.head) {
		return false
	}
	if n > len(of.head) {
		of.head = bytes.Clone(got)
	}
	return true
}

// start positions the follower from its checkpoint (or the end of the
// file), reading a rotated or copied file first when needed. False means
// ctx is done.
func (fl *file) start(ctx context.Context, out chan<- Line) bool {
	fi, err := os.Stat(fl.abs)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		fl.warnOnce("tailer: cannot stat", err)
	}
	if !fl.haveSaved {
		if !exists {
			fl.missing = true
			fl.log.Info("tailer: waiting for the file to appear")
			return fl.check(ctx, out)
		}
		of := fl.openPath()
		if of == nil {
			return fl.check(ctx, out)
		}
		if !fl.fo.cfg.FromStart {
			fl.seekEnd(of)
		}
		fl.cur = of
		fl.fo.setStart(fl.path, of.pos(of.off))
		fl.log.Info("tailer: following", "real", of.name, "inode", of.ino, "offset", of.off)
		return fl.check(ctx, out)
	}
	sp := fl.saved
	if exists {
		dev, ino := fileID(fi)
		if ino == sp.Inode {
			of := fl.openPath()
			if of == nil {
				return true
			}
			headMatch := bytes.HasPrefix(of.head, sp.Head)
			if (of.dev == sp.Dev || headMatch) && of.ino == sp.Inode {
				if of.size >= sp.Offset && headMatch {
					of.off, of.readPos = sp.Offset, sp.Offset
					fl.cur = of
					fl.log.Info("tailer: resuming", "real", of.name, "inode", of.ino, "offset", sp.Offset)
					return fl.check(ctx, out)
				}
				// Truncated (copytruncate), or the inode was freed by a
				// rotation that compressed the file and reused for the
				// new one. Either way the unread rest, if anywhere, is in
				// a rotated file that starts like the checkpoint's: a
				// plain one is a copy (copytruncate), a compressed one
				// may be either.
				ok, matched := fl.drainRotatedFrom(ctx, out, sp, true)
				if !ok {
					of.close()
					return false
				}
				switch {
				case matched != nil && matched.ext == "":
					fl.truncations++
					fl.log.Warn("tailer: file was truncated while stopped; read the rest from its copy, now reading it from the start",
						"offset", sp.Offset, "size", of.size, "copy", matched.name)
				case matched != nil:
					fl.rotations++
					fl.log.Info("tailer: file was rotated while stopped, following the new file from the start",
						"real", of.name, "inode", of.ino)
				default:
					fl.truncations++
					fl.log.Warn("tailer: file was truncated while stopped, reading it from the start",
						"offset", sp.Offset, "size", of.size)
					if !fl.recoverCopy(ctx, out, sp.Head, sp.Offset, dev, ino) {
						of.close()
						return false
					}
				}
				fl.cur = of
				return fl.check(ctx, out)
			}
			of.close()
		}
	}
	// The checkpoint's file is no longer at the path: finish it first.
	if !fl.drainRotated(ctx, out, sp) {
		return false
	}
	if exists {
		fl.cur = fl.openPath()
		if fl.cur != nil {
			fl.rotations++
			fl.log.Info("tailer: following the new file from the start", "real", fl.cur.name, "inode", fl.cur.ino)
		}
	}
	return fl.check(ctx, out)
}

// seekEnd places of after its last complete line.
func (fl *file) seekEnd(of *openFile) {
	if of.size == 0 {
		return
	}
	n := min(of.size, int64(fl.maxLine)+1)
	b := make([]byte, n)
	m, _ := of.f.ReadAt(b, of.size-n)
	b = b[:m]
	switch i := bytes.LastIndexByte(b, '\n'); {
	case i >= 0:
		of.off = of.size - int64(len(b)) + int64(i) + 1
	case int64(len(b)) == of.size:
		of.off = 0 // one partial line: wait for its end
	default:
		of.off = of.size // a partial line already too long: skip it
		of.skipping = true
	}
	of.readPos = of.off
	if of.skipping {
		of.readPos = of.size
	}
}

// check reads what is new, handles truncation and switches to a new file
// at the path. False means ctx is done.
func (fl *file) check(ctx context.Context, out chan<- Line) bool {
	if fl.cur == nil {
		fl.cur = fl.openPath()
		if fl.cur == nil {
			fl.missing = true
			return true
		}
		fl.missing = false
		fl.fo.setStart(fl.path, fl.cur.pos(0)) // a restart must not skip it
		fl.log.Info("tailer: file appeared, reading it from the start", "real", fl.cur.name, "inode", fl.cur.ino)
	}
	if !fl.readCur(ctx, out) {
		return false
	}
	fl.lookForNew()
	for len(fl.pending) > 0 {
		next := fl.pending[0]
		if fi, err := next.f.Stat(); err == nil {
			next.size = fi.Size()
		}
		if next.size == 0 && len(fl.pending) == 1 {
			break // the writer may still be writing to the old file
		}
		// The writer has moved on: drain the old file, then switch.
		if !fl.readCur(ctx, out) {
			return false
		}
		old := fl.cur
		if len(old.buf) > 0 || old.skipping {
			fl.log.Warn("tailer: rotated file ends with an incomplete line, dropped",
				"real", old.name, "bytes", old.readPos-old.off)
		}
		old.close()
		fl.cur, fl.pending = next, fl.pending[1:]
		fl.rotations++
		fl.log.Info("tailer: rotated, following the new file from the start",
			"old_inode", old.ino, "old_offset", old.off, "inode", next.ino)
		if !fl.readCur(ctx, out) {
			return false
		}
	}
	return true
}

// lookForNew opens a file that replaced cur at the path.
func (fl *file) lookForNew() {
	fi, err := os.Stat(fl.abs)
	if err != nil {
		fl.missing = true
		if !errors.Is(err, fs.ErrNotExist) {
			fl.warnOnce("tailer: cannot stat", err)
		}
		return
	}
	fl.missing = false
	dev, ino := fileID(fi)
	last := fl.cur
	if len(fl.pending) > 0 {
		last = fl.pending[len(fl.pending)-1]
	}
	if last.dev == dev && last.ino == ino {
		return
	}
	of := fl.openPath()
	if of == nil {
		return
	}
	if of.dev == last.dev && of.ino == last.ino {
		of.close()
		return
	}
	fl.log.Debug("tailer: new file at path", "inode", of.ino)
	fl.pending = append(fl.pending, of)
}

// readCur reads cur to its end, handling truncation. False: ctx done.
func (fl *file) readCur(ctx context.Context, out chan<- Line) bool {
	cur := fl.cur
	if fi, err := cur.f.Stat(); err == nil {
		cur.size = fi.Size()
	}
	// A file truncated and rewritten to the same size or more shows no
	// new bytes at readPos; only its head tells.
	if cur.size < cur.readPos || !fl.headOK(cur) {
		if !fl.truncated(ctx, out, cur) {
			return false
		}
	}
	for range 3 {
		switch fl.scan(ctx, out, cur) {
		case scanStopped:
			return false
		case scanTruncated:
			if !fl.truncated(ctx, out, cur) {
				return false
			}
		default:
			return true
		}
	}
	return true
}

// truncated restarts cur at 0 after reading the rest of its old content
// from the copy logrotate made, if it can be found.
func (fl *file) truncated(ctx context.Context, out chan<- Line, cur *openFile) bool {
	fl.truncations++
	fl.log.Warn("tailer: file truncated (copytruncate?), reading it again from the start",
		"offset", cur.off, "size", cur.size)
	if cur.off > 0 && len(cur.head) > 0 {
		if !fl.recoverCopy(ctx, out, cur.head, cur.off, cur.dev, cur.ino) {
			return false
		}
	}
	cur.off, cur.readPos, cur.skipping, cur.buf = 0, 0, false, cur.buf[:0]
	cur.head = fl.readHead(cur.f)
	return true
}

var compressedExt = []string{".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".Z", ".zip"}

// rotatedCandidates lists files that may be rotated versions of the path:
// path.1 first, then every other uncompressed path* file.
func (fl *file) rotatedCandidates() []string {
	base := fl.real
	out := []string{base + ".1"}
	matches, _ := filepath.Glob(globEscape(base) + "*")
	for _, m := range matches {
		if m == base || m == base+".1" || m == fl.abs {
			continue
		}
		if slices.ContainsFunc(compressedExt, func(e string) bool { return strings.HasSuffix(m, e) }) {
			continue
		}
		out = append(out, m)
	}
	return out
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// openCandidate opens name if it is a regular file; nil otherwise.
func (fl *file) openCandidate(name string, off int64) *openFile {
	fi, err := os.Stat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(name)
	if err != nil {
		fl.log.Warn("tailer: cannot open rotated file", "real", name, "err", err)
		return nil
	}
	of, err := fl.newOpenFile(f, name, off)
	if err != nil {
		f.Close()
		return nil
	}
	return of
}

// rotatedFile is a file next to the path whose name says it is an earlier
// version of it: path.N or path-DATE (logrotate's dateext), either one
// possibly compressed (path.2.gz, path-20260102.gz).
type rotatedFile struct {
	name string
	ext  string // compression suffix such as ".gz"; "" for a plain file
	num  int    // N of path.N; -1 for a dated name
}

var rotatedSuffix = regexp.MustCompile(`^[.-](\d[\d_.-]*?)(\.(?:gz|bz2|xz|zst|lz4|lzma|Z|zip))?$`)

// rotatedFiles lists the rotated versions of the path, oldest first:
// dated names in name order, then numbered ones from the highest number
// down (logrotate shifts path.1 to path.2 and so on).
func (fl *file) rotatedFiles() []rotatedFile {
	base := fl.real
	matches, _ := filepath.Glob(globEscape(base) + "*")
	var out []rotatedFile
	for _, m := range matches {
		sm := rotatedSuffix.FindStringSubmatch(m[len(base):])
		if sm == nil || m == fl.abs {
			continue
		}
		rf := rotatedFile{name: m, ext: sm[2], num: -1}
		if n, err := strconv.Atoi(sm[1]); err == nil && m[len(base)] == '.' {
			rf.num = n
		}
		out = append(out, rf)
	}
	slices.SortFunc(out, func(a, b rotatedFile) int {
		switch {
		case a.num < 0 && b.num < 0:
			return strings.Compare(a.name, b.name)
		case a.num < 0:
			return -1
		case b.num < 0:
			return 1
		}
		return b.num - a.num
	})
	return out
}

// decompress returns a reader of the decompressed content of f, for the
// formats the standard library reads.
func decompress(f io.Reader, ext string) (io.Reader, error) {
	switch ext {
	case ".gz":
		return gzip.NewReader(f)
	case ".bz2":
		return bzip2.NewReader(f), nil
	}
	return nil, fmt.Errorf("cannot read %s files", ext)
}

// openRotated opens a rotated file and skips to off (decompressed bytes
// for a compressed one). The head is that of the (decompressed) content.
func (fl *file) openRotated(rf rotatedFile, off int64) (*openFile, error) {
	if rf.ext == "" {
		of := fl.openCandidate(rf.name, off)
		if of == nil {
			return nil, errors.New("not a readable regular file")
		}
		return of, nil
	}
	head, err := compressedHead(rf)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(rf.name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	zr, err := decompress(f, rf.ext)
	if err != nil {
		f.Close()
		return nil, err
	}
	if n, err := io.CopyN(io.Discard, zr, off); err != nil {
		f.Close()
		return nil, fmt.Errorf("shorter (%d bytes) than the checkpoint offset %d: %w", n, off, err)
	}
	of := &openFile{f: f, stream: zr, name: rf.name, off: off, readPos: off, head: head}
	of.dev, of.ino = fileID(fi)
	return of, nil
}

// compressedHead returns the first headLen decompressed bytes of rf.
func compressedHead(rf rotatedFile) ([]byte, error) {
	f, err := os.Open(rf.name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := decompress(f, rf.ext)
	if err != nil {
		return nil, err
	}
	head := make([]byte, headLen)
	n, err := io.ReadFull(zr, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	return head[:n], nil
}

// isCheckpointFile tells whether rf is the file checkpoint sp was taken
// in (or a copy of it): a plain file by its inode (and device or head), a
// compressed one, which has a new inode, by its decompressed head starting
// with sp.Head. With copied set, plain files are matched by head too (the
// copy logrotate's copytruncate makes has a new inode). An empty sp.Head
// (the file was empty) identifies nothing by head.
func (fl *file) isCheckpointFile(rf rotatedFile, sp Position, copied bool) bool {
	if rf.ext == "" && copied {
		f, err := os.Open(rf.name)
		if err != nil {
			return false
		}
		defer f.Close()
		return len(sp.Head) > 0 && bytes.HasPrefix(fl.readHead(f), sp.Head)
	}
	if rf.ext == "" {
		// The head is checked even when device and inode match: a
		// rotation that compresses and deletes the file frees its inode
		// for the next new file.
		fi, err := os.Stat(rf.name)
		if err != nil || !fi.Mode().IsRegular() {
			return false
		}
		if _, ino := fileID(fi); ino != sp.Inode {
			return false
		}
		f, err := os.Open(rf.name)
		if err != nil {
			return false
		}
		defer f.Close()
		return bytes.HasPrefix(fl.readHead(f), sp.Head)
	}
	if len(sp.Head) == 0 {
		return false
	}
	head, err := compressedHead(rf)
	if err != nil {
		fl.log.Debug("tailer: cannot read the head of a compressed rotated file", "real", rf.name, "err", err)
		return false
	}
	return bytes.HasPrefix(head, sp.Head)
}

// drainRotated reads what the follower missed while stopped when the file
// of checkpoint sp is no longer at the path: that file from sp.Offset to
// its end, wherever rotation put it (compressed included), then every file
// rotated after it, oldest first. The caller then reads the live file.
func (fl *file) drainRotated(ctx context.Context, out chan<- Line, sp Position) bool {
	ok, matched := fl.drainRotatedFrom(ctx, out, sp, false)
	if !ok || matched != nil {
		return ok
	}
	// Not under a rotated name: any other uncompressed path* file.
	for _, name := range fl.rotatedCandidates() {
		of := fl.openCandidate(name, sp.Offset)
		if of == nil {
			continue
		}
		if of.ino != sp.Inode || (of.dev != sp.Dev && !bytes.HasPrefix(of.head, sp.Head)) {
			of.close()
			continue
		}
		if of.size < sp.Offset || !bytes.HasPrefix(of.head, sp.Head) {
			fl.log.Warn("tailer: rotated file does not match the checkpoint, not read",
				"real", name, "offset", sp.Offset, "size", of.size)
			of.close()
			return true
		}
		fl.log.Info("tailer: reading the rest of the rotated file", "real", name, "offset", sp.Offset)
		return fl.drain(ctx, out, of)
	}
	fl.log.Warn("tailer: rotated file of the checkpoint not found, its unread lines are lost",
		"inode", sp.Inode, "offset", sp.Offset)
	return true
}

// drainRotatedFrom looks for the checkpoint's file among the rotated
// files (see isCheckpointFile) and reads it from sp.Offset, then every
// later one from 0. matched is the checkpoint's file, nil when none matched.
func (fl *file) drainRotatedFrom(ctx context.Context, out chan<- Line, sp Position, copied bool) (ok bool, matched *rotatedFile) {
	files := fl.rotatedFiles()
	for i := len(files) - 1; i >= 0; i-- { // newest first: usually path.1
		if !fl.isCheckpointFile(files[i], sp, copied) {
			continue
		}
		// A plain file's mtime is its last write, so every file rotated
		// after it was written later: one that was not is named like
		// a newer file without being one (numbers that grow with age
		// rather than logrotate's shifting) and was read before. A
		// compressed file's mtime may be its compression time, so
		// the names alone order the files after a compressed one.
		var since time.Time
		if fi, err := os.Stat(files[i].name); err == nil && files[i].ext == "" {
			since = fi.ModTime()
		}
		if !fl.drainRotatedFile(ctx, out, files[i], sp.Offset, sp.Head) {
			return false, &files[i]
		}
		for _, later := range files[i+1:] {
			if fi, err := os.Stat(later.name); err == nil && fi.ModTime().Before(since) {
				fl.log.Warn("tailer: rotated file named as newer than the checkpoint's but last written before it, not read",
					"real", later.name, "checkpoint_file", files[i].name)
				continue
			}
			if !fl.drainRotatedFile(ctx, out, later, 0, nil) {
				return false, &files[i]
			}
		}
		return true, &files[i]
	}
	return true, nil
}

// drainRotatedFile reads rf from off to its end. A file that cannot be
// read is logged and skipped: its lines are lost, the others are not.
func (fl *file) drainRotatedFile(ctx context.Context, out chan<- Line, rf rotatedFile, off int64, head []byte) bool {
	of, err := fl.openRotated(rf, off)
	if err != nil {
		fl.log.Warn("tailer: cannot read a rotated file, its unread lines are lost", "real", rf.name, "offset", off, "err", err)
		return true
	}
	if rf.ext == "" && (of.size < off || !bytes.HasPrefix(of.head, head)) {
		fl.log.Warn("tailer: rotated file does not match the checkpoint, not read",
			"real", rf.name, "offset", off, "size", of.size)
		of.close()
		return true
	}
	if off > 0 {
		fl.log.Info("tailer: reading the rest of the rotated file", "real", rf.name, "offset", off)
	} else {
		fl.log.Info("tailer: reading a file rotated while stopped", "real", rf.name)
	}
	return fl.drain(ctx, out, of)
}

// recoverCopy reads, from off to its end, the copy of a truncated file: a
// rotated candidate whose head matches.
func (fl *file) recoverCopy(ctx context.Context, out chan<- Line, head []byte, off int64, dev, ino uint64) bool {
	for _, name := range fl.rotatedCandidates() {
		of := fl.openCandidate(name, off)
		if of == nil {
			continue
		}
		if (of.dev == dev && of.ino == ino) || of.size < off || !bytes.HasPrefix(of.head, head) {
			of.close()
			continue
		}
		fl.log.Info("tailer: reading the rest of the truncated file from its copy", "real", name, "offset", off)
		return fl.drain(ctx, out, of)
	}
	fl.log.Warn("tailer: copy of the truncated file not found, its unread lines are lost", "offset", off)
	return true
}

// drain reads a file that no longer grows to its end and closes it.
func (fl *file) drain(ctx context.Context, out chan<- Line, of *openFile) bool {
	defer of.close()
	switch fl.scan(ctx, out, of) {
	case scanStopped:
		return false
	case scanTruncated:
		fl.log.Warn("tailer: rotated file changed while read", "real", of.name)
	}
	if len(of.buf) > 0 || of.skipping {
		fl.log.Warn("tailer: rotated file ends with an incomplete line, dropped",
			"real", of.name, "bytes", of.readPos-of.off)
	}
	return true
}

type scanResult int

const (
	scanEOF scanResult = iota
	scanStopped
	scanTruncated
	scanError
)

// scan reads of from readPos to its end and emits the complete lines.
func (fl *file) scan(ctx context.Context, out chan<- Line, of *openFile) scanResult {
	if of.buf == nil {
		of.buf = make([]byte, 0, fl.bufSize)
	}
	for {
		var dst []byte
		if of.skipping {
			dst = of.buf[:cap(of.buf)]
		} else {
			dst = of.buf[len(of.buf):cap(of.buf)]
		}
		var n int
		var err error
		if of.stream != nil {
			n, err = of.stream.Read(dst)
		} else {
			n, err = of.f.ReadAt(dst, of.readPos)
		}
		if n > 0 {
			// Verify after reading: if the head still matches, what was
			// read is old content, not a rewrite after a truncation. A
			// compressed file is written once, never truncated.
			if of.stream == nil && !fl.headOK(of) {
				return scanTruncated
			}
			of.readPos += int64(n)
			of.size = max(of.size, of.readPos)
			if of.skipping {
				i := bytes.IndexByte(dst[:n], '\n')
				if i < 0 {
					of.buf = of.buf[:0]
				} else {
					of.off = of.readPos - int64(n) + int64(i) + 1
					of.skipping = false
					fl.skipLine(of.off)
					of.buf = of.buf[:copy(of.buf[:cap(of.buf)], dst[i+1:n])]
				}
			} else {
				of.buf = of.buf[:len(of.buf)+n]
			}
			if !of.skipping && !fl.emitLines(ctx, out, of) {
				return scanStopped
			}
		}
		if err != nil {
			if err == io.EOF {
				return scanEOF
			}
			fl.warnOnce("tailer: read failed", err)
			return scanError
		}
	}
}

func (fl *file) skipLine(end int64) {
	fl.skipped++
	fl.log.Warn("tailer: line too long, skipped", "end_offset", end, "max", fl.maxLine)
}

// emitLines sends the complete lines in of.buf and keeps the partial rest.
func (fl *file) emitLines(ctx context.Context, out chan<- Line, of *openFile) bool {
	data := of.buf
	s := 0
	for {
		i := bytes.IndexByte(data[s:], '\n')
		if i < 0 {
			break
		}
		line := data[s : s+i]
		s += i + 1
		end := of.off + int64(s)
		if len(line) > fl.maxLine {
			fl.skipLine(end)
			continue
		}
		l := Line{Text: string(line), Path: fl.path, File: of.name, Pos: of.pos(end)}
		select {
		case out <- l:
		case <-ctx.Done():
			return false
		}
		if fl.fo.autoAck {
			fl.fo.Ack(l)
		}
		fl.lines++
	}
	of.off += int64(s)
	n := copy(data, data[s:])
	of.buf = data[:n]
	if n > fl.maxLine {
		of.skipping = true
		of.buf = of.buf[:0]
	}
	return true
}

func (fl *file) publish() {
	st := FileStats{Path: fl.path, File: fl.real, Lines: fl.lines, Skipped: fl.skipped,
		Rotations: fl.rotations, Truncations: fl.truncations, Missing: fl.missing}
	if c := fl.cur; c != nil {
		st.File, st.Inode, st.Offset = c.name, c.ino, c.off
		st.Size = max(c.size, c.readPos)
		st.Lag = st.Size - st.Offset
	}
	fl.mu.Lock()
	fl.stats = st
	fl.mu.Unlock()
}
