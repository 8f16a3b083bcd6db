package tailer

import (
	"log/slog"
	"os"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/nxadm/tail/watch"
	"gopkg.in/tomb.v1"
)

// notifier wakes a follower when its file may have changed. Delivery is best
// effort (the follower also rechecks on a timer); C never closes.
type notifier interface {
	C() <-chan struct{}
	Close()
}

// nxadmNotifier uses nxadm/tail's FileWatcher (inotify or polling), the part
// of the library that tail.TailFile itself waits on. It only signals; it
// never reads the file.
type nxadmNotifier struct {
	c    chan struct{}
	t    tomb.Tomb
	done chan struct{}
}

func newNxadmNotifier(path string, poll bool, log *slog.Logger) notifier {
	var fw watch.FileWatcher
	if poll {
		fw = watch.NewPollingFileWatcher(path)
	} else {
		fw = watch.NewInotifyFileWatcher(path)
	}
	n := &nxadmNotifier{c: make(chan struct{}, 1), done: make(chan struct{})}
	go n.loop(path, fw, log)
	return n
}

func (n *nxadmNotifier) C() <-chan struct{} { return n.c }

// Close stops the watcher goroutine. nxadm/tail removes its own watch
// asynchronously, after Close returns.
func (n *nxadmNotifier) Close() {
	n.t.Kill(nil)
	<-n.done
}

func (n *nxadmNotifier) ping() {
	select {
	case n.c <- struct{}{}:
	default:
	}
}

// pause waits d or until Close; false means closing.
func (n *nxadmNotifier) pause(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-n.t.Dying():
		return false
	}
}

func (n *nxadmNotifier) loop(path string, fw watch.FileWatcher, log *slog.Logger) {
	defer close(n.done)
	for {
		if err := fw.BlockUntilExists(&n.t); err != nil {
			if err == tomb.ErrDying {
				return
			}
			log.Debug("tailer: watch for creation failed", "err", err)
			if !n.pause(recheckEvery) {
				return
			}
			continue
		}
		n.ping()
		fi, err := os.Stat(path)
		if err != nil {
			if !n.pause(recheckEvery) {
				return
			}
			continue
		}
		ch, err := fw.ChangeEvents(&n.t, fi.Size())
		if err != nil {
			log.Debug("tailer: watch for changes failed", "err", err)
			if !n.pause(recheckEvery) {
				return
			}
			continue
		}
	changes:
		for {
			select {
			case <-ch.Modified:
				n.ping()
			case <-ch.Truncated:
				n.ping()
			case <-ch.Deleted: // moved or removed: wait for the next file
				n.ping()
				break changes
			case <-n.t.Dying():
				return
			}
		}
	}
}

// inotifyAvailable reports whether an inotify instance can be created.
// nxadm/tail's shared watcher calls os.Exit when it cannot, so check first.
func inotifyAvailable() bool {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return false
	}
	w.Close()
	return true
}
