package tailer

import (
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRotationSoak appends N numbered lines while the file is rotated three
// times by rename+create and three times by copytruncate. Every line must
// come out exactly once, in order.
func TestRotationSoak(t *testing.T) {
	for _, tc := range []struct {
		name string
		poll bool
	}{
		{"inotify", false},
		{"poll", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 20000
			if testing.Short() {
				n = 5000
			}
			path := filepath.Join(t.TempDir(), "mail.log")
			w := newLogWriter(t, path)
			h := start(t, Config{Paths: []string{path}, Poll: tc.poll, FromStart: true}, newMemCP(), 0)

			kinds := []string{"rename", "copytruncate", "rename", "copytruncate", "rename", "copytruncate"}
			rng := rand.New(rand.NewPCG(1, 2))
			next := 0      // next rotation
			caughtUp := 0  // the follower must have this many lines before the next rotation
			reopenAt := -1 // line at which the writer moves to the new file
			for i := 1; i <= n; i++ {
				if next < len(kinds) && i == (next+1)*n/(len(kinds)+1) {
					// Rotations are hours apart in real life; do not
					// rotate twice before the follower saw the last one.
					h.waitCount(caughtUp, 20*time.Second)
					switch kinds[next] {
					case "rename":
						rotateRename(t, path)
						reopenAt = i + 5 // a few lines still go to the old file
						caughtUp = reopenAt
					case "copytruncate":
						// No write between copy and truncate: this test is single-writer.
						rotateCopyTruncate(t, path)
						caughtUp = i
					}
					next++
				}
				if i == reopenAt {
					w.reopen()
				}
				w.lines(i, i)
				if i%50 == 0 {
					time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
				}
			}
			h.waitCount(n, 30*time.Second)
			time.Sleep(50 * time.Millisecond) // nothing more may arrive
			h.stop()
			checkSeq(t, h.lines(), 1, n)
			st := h.stats()
			if st.Rotations != 3 || st.Truncations != 3 || st.Skipped != 0 {
				t.Errorf("stats = %+v, want 3 rotations, 3 truncations, 0 skipped", st)
			}
		})
	}
}

// TestRestart stops the follower after about half the lines were
// acknowledged, writes more (rotating while it is down) and starts a new
// follower on the same checkpoint: exactly N lines overall.
func TestRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rotate func(t *testing.T, path string)
		after  int // lines written after the rotation
		trunc  uint64
		rot    uint64
	}{
		{"no rotation", nil, 1000, 0, 0},
		{"rename while down", rotateRename, 1000, 0, 1},
		{"copytruncate while down", rotateCopyTruncate, 1000, 1, 0},
		{"copytruncate and regrown while down", rotateCopyTruncate, 4000, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const first, half, before = 2200, 2000, 100
			path := filepath.Join(t.TempDir(), "mail.log")
			cp := newMemCP()
			w := newLogWriter(t, path)

			h1 := start(t, Config{Paths: []string{path}, FromStart: true}, cp, half)
			w.lines(1, first)
			h1.waitCount(half, 10*time.Second)
			// More lines were delivered to the channel than acknowledged.
			h1.stop()
			got1 := h1.lines()
			checkSeq(t, got1, 1, half)

			w.lines(first+1, first+before)
			if tc.rotate != nil {
				tc.rotate(t, path)
				w.reopen()
			}
			n := first + before + tc.after
			w.lines(first+before+1, n)

			h2 := start(t, Config{Paths: []string{path}, FromStart: true}, cp, 0)
			h2.waitCount(n-half, 10*time.Second)
			time.Sleep(50 * time.Millisecond)
			h2.stop()
			got2 := h2.lines()
			checkSeq(t, got2, half+1, n-half)
			if tc.rotate != nil && !strings.HasSuffix(got2[0].File, ".1") {
				t.Errorf("first line after restart read from %s, want the rotated file", got2[0].File)
			}
			if st := h2.stats(); st.Truncations != tc.trunc || st.Rotations != tc.rot {
				t.Errorf("stats = %+v, want %d truncations, %d rotations", st, tc.trunc, tc.rot)
			}
			// The saved checkpoint is after the last line.
			p, ok, _ := cp.LoadPosition(path)
			fi, _ := os.Stat(path)
			if !ok || p.Offset != fi.Size() {
				t.Errorf("checkpoint %+v, want offset %d", p, fi.Size())
			}
		})
	}
}

// TestStartPosition covers where a follower without a checkpoint starts.
func TestStartPosition(t *testing.T) {
	for _, tc := range []struct {
		name      string
		existing  string
		fromStart bool
		appendS   string
		want      []string
	}{
		{"end", "a\nb\n", false, "c\nd\n", []string{"c", "d"}},
		{"end after partial", "a\nb\npart", false, "ial\nc\n", []string{"partial", "c"}},
		{"end one partial line", "part", false, "ial\n", []string{"partial"}},
		{"start", "a\nb\n", true, "c\n", []string{"a", "b", "c"}},
		{"empty", "", false, "c\n", []string{"c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.log")
			if err := os.WriteFile(path, []byte(tc.existing), 0o644); err != nil {
				t.Fatal(err)
			}
			cp := newMemCP()
			h := start(t, Config{Paths: []string{path}, FromStart: tc.fromStart}, cp, 0)
			// The start position is saved even before any line.
			waitFor(t, 5*time.Second, "start position saved", func() bool { _, ok, _ := cp.LoadPosition(path); return ok })
			w := newLogWriter(t, path)
			w.write(tc.appendS)
			h.waitCount(len(tc.want), 5*time.Second)
			time.Sleep(30 * time.Millisecond)
			h.stop()
			var got []string
			for _, l := range h.lines() {
				got = append(got, l.Text)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDisappearAndReturn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	h := start(t, Config{Paths: []string{path}, FromStart: true}, newMemCP(), 0)
	w.lines(1, 10)
	h.waitCount(10, 5*time.Second)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "missing", func() bool { return h.stats().Missing })
	w.reopen() // creates the file again
	w.lines(11, 15)
	h.waitCount(15, 5*time.Second)
	time.Sleep(30 * time.Millisecond)
	h.stop()
	checkSeq(t, h.lines(), 1, 15)
	if st := h.stats(); st.Rotations != 1 || st.Missing {
		t.Errorf("stats = %+v", st)
	}
}

func TestMissingAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	h := start(t, Config{Paths: []string{path}}, newMemCP(), 0)
	waitFor(t, 5*time.Second, "missing", func() bool { return h.stats().Missing })
	w := newLogWriter(t, path)
	w.lines(1, 3) // a file that appears later is read from 0
	h.waitCount(3, 5*time.Second)
	h.stop()
	checkSeq(t, h.lines(), 1, 3)
}

func TestLongLines(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		long    int  // bytes of the long line
		pieces  int  // written in this many appends
		skipped bool // expected to be skipped
	}{
		{"10MB line", 0, 10 << 20, 7, true},
		{"exactly max", 100, 100, 1, false},
		{"max+1", 100, 101, 1, true},
		{"max+1 in pieces", 100, 101, 3, true},
		{"twice buffer", 100, 70 << 10, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.log")
			w := newLogWriter(t, path)
			h := start(t, Config{Paths: []string{path}, FromStart: true, MaxLineLength: tc.max}, newMemCP(), 0)
			w.lines(1, 2)
			long := strings.Repeat("x", tc.long)
			for i := range tc.pieces {
				w.write(long[i*len(long)/tc.pieces : (i+1)*len(long)/tc.pieces])
			}
			w.write("\n")
			w.lines(3, 4)
			want := 4
			if !tc.skipped {
				want = 5
			}
			h.waitCount(want, 10*time.Second)
			time.Sleep(30 * time.Millisecond)
			h.stop()
			got := h.lines()
			if len(got) != want {
				t.Fatalf("got %d lines, want %d", len(got), want)
			}
			var nums []Line
			for _, l := range got {
				if strings.HasPrefix(l.Text, "line ") {
					nums = append(nums, l)
				} else if l.Text != long {
					t.Errorf("unexpected line of %d bytes", len(l.Text))
				}
			}
			checkSeq(t, nums, 1, 4)
			if st := h.stats(); (st.Skipped == 1) != tc.skipped {
				t.Errorf("skipped = %d", st.Skipped)
			}
		})
	}
}

func TestPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	h := start(t, Config{Paths: []string{path}, FromStart: true}, newMemCP(), 0)
	w.write("first half")
	waitFor(t, 5*time.Second, "follower saw the partial line", func() bool { return h.stats().Size == 10 })
	time.Sleep(30 * time.Millisecond)
	if h.count() != 0 {
		t.Fatalf("partial line emitted: %q", h.lines()[0].Text)
	}
	w.write(", second half\nnext\n")
	h.waitCount(2, 5*time.Second)
	time.Sleep(30 * time.Millisecond)
	h.stop()
	got := h.lines()
	if len(got) != 2 || got[0].Text != "first half, second half" || got[1].Text != "next" {
		t.Errorf("got %+v", got)
	}
	if got[1].Pos.Offset != int64(len("first half, second half\nnext\n")) {
		t.Errorf("offset = %d", got[1].Pos.Offset)
	}
}

// TestCopyTruncateRegrown: the file is truncated and grows back past the
// read offset before the follower looks again. The size never looks
// smaller; the head fingerprint catches it.
func TestCopyTruncateRegrown(t *testing.T) {
	old := recheckEvery
	recheckEvery = time.Hour
	defer func() { recheckEvery = old }()
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	mn := &manualNotifier{c: make(chan struct{}, 1)}
	h := start(t, Config{Paths: []string{path}, FromStart: true}, newMemCP(), 0,
		func(f *Follower) { f.newNotifier = func(string, bool, *slog.Logger) notifier { return mn } })
	w.lines(1, 10)
	mn.poke()
	h.waitCount(10, 5*time.Second)
	w.lines(11, 15) // not yet seen: recovered from the copy
	rotateCopyTruncate(t, path)
	w.lines(16, 60) // far past the old offset
	mn.poke()
	h.waitCount(60, 5*time.Second)
	mn.poke()
	time.Sleep(30 * time.Millisecond)
	h.stop()
	checkSeq(t, h.lines(), 1, 60)
	if st := h.stats(); st.Truncations != 1 {
		t.Errorf("truncations = %d", st.Truncations)
	}
}

func TestSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.log")
	link := filepath.Join(dir, "mail.log")
	w := newLogWriter(t, real)
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	h := start(t, Config{Paths: []string{link}, FromStart: true}, newMemCP(), 0)
	w.lines(1, 5)
	h.waitCount(5, 5*time.Second)
	rotateRename(t, real)
	w.reopen()
	w.lines(6, 10)
	h.waitCount(10, 5*time.Second)
	time.Sleep(30 * time.Millisecond)
	h.stop()
	checkSeq(t, h.lines(), 1, 10)
	if st := h.stats(); st.File != real || st.Rotations != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestFollowAutoAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	cp := newMemCP()
	h := start(t, Config{Paths: []string{path}, FromStart: true}, cp, 0, func(f *Follower) { f.autoAck = true })
	w.lines(1, 3)
	h.waitCount(3, 5*time.Second)
	h.stop()
	p, _, _ := cp.LoadPosition(path)
	if fi, _ := os.Stat(path); p.Offset != fi.Size() {
		t.Errorf("offset %d, want %d", p.Offset, fi.Size())
	}
}

func TestPositionJSON(t *testing.T) {
	p := Position{Dev: 2049, Inode: 42, Offset: 10, Size: 20, Head: []byte("Nov 25")}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var q Position
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatal(err)
	}
	if q.Inode != p.Inode || q.Offset != p.Offset || string(q.Head) != string(p.Head) {
		t.Errorf("round trip: %+v", q)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no paths", Config{}},
		{"duplicate", Config{Paths: []string{"/x/a.log", "/x/../x/a.log"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, nil); err == nil {
				t.Error("no error")
			}
		})
	}
}

// TestRenameWriterLate: after a rename rotation the writer keeps writing to
// the old file for a while; the new file stays empty until it reopens.
func TestRenameWriterLate(t *testing.T) {
	old := recheckEvery
	recheckEvery = time.Hour
	defer func() { recheckEvery = old }()
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	mn := &manualNotifier{c: make(chan struct{}, 1)}
	h := start(t, Config{Paths: []string{path}, FromStart: true}, newMemCP(), 0,
		func(f *Follower) { f.newNotifier = func(string, bool, *slog.Logger) notifier { return mn } })
	fl := h.f.files[0]
	// pokeAndWait wakes the follower and waits for one whole check.
	pokeAndWait := func() {
		n := fl.checks.Load()
		mn.poke()
		waitFor(t, 5*time.Second, "a check", func() bool { return fl.checks.Load() > n })
	}
	w.lines(1, 5)
	pokeAndWait()
	rotateRename(t, path)
	pokeAndWait() // sees the new, empty file
	w.lines(6, 10)
	pokeAndWait()
	w.reopen()
	w.lines(11, 15)
	pokeAndWait()
	h.waitCount(15, 5*time.Second)
	h.stop()
	checkSeq(t, h.lines(), 1, 15)
	if st := h.stats(); st.Rotations != 1 {
		t.Errorf("rotations = %d", st.Rotations)
	}
}

// TestNotifyOnly runs without the timer fallback: the directory inotify
// watcher alone must wake the follower through appends, a rename rotation,
// a copytruncate and a delete/recreate.
func TestNotifyOnly(t *testing.T) {
	old := recheckEvery
	recheckEvery = time.Hour
	defer func() { recheckEvery = old }()
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	h := start(t, Config{Paths: []string{path}, FromStart: true}, newMemCP(), 0)
	w.lines(1, 10)
	h.waitCount(10, 5*time.Second)
	rotateRename(t, path)
	w.reopen()
	w.lines(11, 20)
	h.waitCount(20, 5*time.Second)
	rotateCopyTruncate(t, path)
	w.lines(21, 30)
	h.waitCount(30, 5*time.Second)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.reopen()
	w.lines(31, 40)
	h.waitCount(40, 5*time.Second)
	h.stop()
	checkSeq(t, h.lines(), 1, 40)
}

// TestCopyTruncateSameSize: truncated and rewritten to exactly the old
// size, so no byte is new at the read offset.
func TestCopyTruncateSameSize(t *testing.T) {
	old := recheckEvery
	recheckEvery = time.Hour
	defer func() { recheckEvery = old }()
	path := filepath.Join(t.TempDir(), "mail.log")
	w := newLogWriter(t, path)
	mn := &manualNotifier{c: make(chan struct{}, 1)}
	h := start(t, Config{Paths: []string{path}, FromStart: true}, newMemCP(), 0,
		func(f *Follower) { f.newNotifier = func(string, bool, *slog.Logger) notifier { return mn } })
	w.lines(1, 10)
	mn.poke()
	h.waitCount(10, 5*time.Second)
	rotateCopyTruncate(t, path)
	w.lines(11, 20) // same length as lines 1-10
	mn.poke()
	h.waitCount(20, 5*time.Second)
	time.Sleep(30 * time.Millisecond)
	h.stop()
	checkSeq(t, h.lines(), 1, 20)
}
