package tailer

import (
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// notifier wakes a follower when its file may have changed. Delivery is best
// effort (the follower also rechecks on a timer); C never closes.
type notifier interface {
	C() <-chan struct{}
	Close()
}

// dirNotifier watches the directory that holds the file with inotify (via
// fsnotify) and signals on any event for the file's name: writes, a new
// file at the path, renames, removal, attribute changes. Watching the
// directory rather than the file survives rotation without re-arming.
//
// It never stats the path, and no error ends the process: when the
// directory cannot be watched (missing, unreadable, inotify exhausted) it
// logs at debug level and tries again after recheckEvery, while the
// follower's timer keeps reading. (nxadm/tail's FileWatchers, used here
// before, call os.Exit through util.Fatal when a stat fails with anything
// but "not exist", for example permission denied.)
type dirNotifier struct {
	c    chan struct{}
	stop chan struct{}
	done chan struct{}
}

// newDirNotifier returns a notifier for path. With poll set it never
// signals: the follower's recheck timer is the poll.
func newDirNotifier(path string, poll bool, log *slog.Logger) notifier {
	n := &dirNotifier{c: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if poll {
		close(n.done)
		return n
	}
	go n.loop(path, log)
	return n
}

func (n *dirNotifier) C() <-chan struct{} { return n.c }

// Close stops the watcher goroutine and waits for it.
func (n *dirNotifier) Close() {
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	<-n.done
}

func (n *dirNotifier) ping() {
	select {
	case n.c <- struct{}{}:
	default:
	}
}

// pause waits d or until Close; false means closing.
func (n *dirNotifier) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-n.stop:
		return false
	}
}

func (n *dirNotifier) loop(path string, log *slog.Logger) {
	defer close(n.done)
	dir, base := filepath.Dir(path), filepath.Base(path)
	lastErr := ""
	for {
		if err := n.watch(dir, base); err != nil && err.Error() != lastErr {
			lastErr = err.Error()
			log.Debug("tailer: cannot watch the directory, relying on the recheck timer", "dir", dir, "err", err)
		}
		if !n.pause(recheckEvery) {
			return
		}
	}
}

// watch signals events for base in dir until the directory itself goes
// away (removed or renamed: the watch would follow the old inode), the
// watcher fails, or Close. A nil error with the notifier still open means
// "watch again".
func (n *dirNotifier) watch(dir, base string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return err
	}
	n.ping() // the file may have changed while nothing watched it
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Name == dir && ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
				n.ping()
				return nil
			}
			if filepath.Base(ev.Name) == base {
				n.ping()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			n.ping() // an overflow loses events: let the follower look
			if err != fsnotify.ErrEventOverflow {
				return err
			}
		case <-n.stop:
			return nil
		}
	}
}

// inotifyAvailable reports whether an inotify instance can be created.
func inotifyAvailable() bool {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return false
	}
	w.Close()
	return true
}
