package policy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// socketPerms are what a new unix socket gets before it appears under
// its name: uid and gid (-1: unchanged) and mode (0: unchanged, the
// umask's).
type socketPerms struct {
	uid, gid int
	mode     os.FileMode
}

// sockName is the socket's name inside the private directory.
const sockName = "s"

// listenUnix creates a listening unix socket at path that nobody but us
// can touch before it is finished. The socket's directory usually
// belongs to another user (/var/spool/postfix/private is postfix's): a
// chmod or chown by path after bind would let that user swap the new
// socket for a symlink (or a hard link) and have us chmod or chown any
// file. So the socket is bound in a new private directory (mode 0700,
// ours) beside path, given its mode and owner there, where no one else
// can replace it, and renamed into place: rename is atomic, replaces a
// stale socket and never follows a symlink at the destination.
//
// Something already at path that answers a connection is refused (a
// typo must not take over another service's socket); anything at path
// that is not a socket is refused too.
func listenUnix(path string, perms socketPerms) (net.Listener, error) {
	dir, base := filepath.Split(path)
	if base == "" {
		return nil, fmt.Errorf("%s: no file name", path)
	}
	if err := refuseInUse(path); err != nil {
		return nil, err
	}
	parent, err := unix.Open(filepath.Clean(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	keepParent := false
	defer func() {
		if !keepParent {
			unix.Close(parent)
		}
	}()
	var parentSt unix.Stat_t
	if err := unix.Fstat(parent, &parentSt); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dir, err)
	}
	_, procErr := os.Stat("/proc/self/fd")
	tmpName, tmp, err := privateDir(parent, base)
	if err != nil {
		return nil, fmt.Errorf("private directory in %s: %w", dir, err)
	}
	defer func() {
		unix.Unlinkat(tmp, sockName, 0) // gone after the rename; there after an error
		unix.Unlinkat(parent, tmpName, unix.AT_REMOVEDIR)
		unix.Close(tmp)
	}()
	bindPath, err := bindPathFor(dir, tmpName, tmp, parentSt.Uid, procErr == nil, os.Geteuid())
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", bindPath)
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // Close removes only the socket we made, by its inode
	fail := func(err error) (net.Listener, error) {
		ul.Close()
		return nil, err
	}
	// No one else can write the private directory, so these names are
	// ours; an fchmod/fchown of the socket descriptor would change the
	// socket, not the file.
	if perms.mode != 0 {
		if err := unix.Fchmodat(tmp, sockName, uint32(perms.mode), 0); err != nil {
			return fail(fmt.Errorf("policy.mode: chmod: %w", err))
		}
	}
	if perms.uid != -1 || perms.gid != -1 {
		if err := unix.Fchownat(tmp, sockName, perms.uid, perms.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fail(fmt.Errorf("policy.owner/group: chown: %w", err))
		}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tmp, sockName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail(fmt.Errorf("stat new socket: %w", err))
	}
	if err := unix.Renameat(tmp, sockName, parent, base); err != nil {
		return fail(fmt.Errorf("rename socket to %s: %w", path, err))
	}
	keepParent = true // Close removes the socket through it
	return &unixListener{UnixListener: ul, addr: &net.UnixAddr{Name: path, Net: "unix"},
		parent: parent, base: base, dev: st.Dev, ino: st.Ino}, nil
}

// bindPathFor is where to bind the socket in the private directory tmp
// (named tmpName in dir). Through /proc it is our descriptor of the
// directory, not its name, which the parent's owner could rename and
// replace. Without /proc the name must be used: that is safe only when
// no one else may rename entries in the parent (owned by root or by us);
// otherwise the socket could be bound in a directory of theirs.
func bindPathFor(dir, tmpName string, tmp int, parentUID uint32, haveProc bool, euid int) (string, error) {
	if haveProc {
		return "/proc/self/fd/" + strconv.Itoa(tmp) + "/" + sockName, nil
	}
	if parentUID != 0 && int(parentUID) != euid {
		return "", fmt.Errorf("%s belongs to uid %d and /proc is not mounted: cannot bind the socket there safely", dir, parentUID)
	}
	return filepath.Join(dir, tmpName, sockName), nil
}

// refuseInUse errors when path exists and is not a socket, or is a
// socket something answers on.
func refuseInUse(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s is in use: another process answers on it (a second mxguard, or another service's socket?)", path)
	}
	return nil // a stale socket: the rename replaces it
}

// privateDir makes a new directory (mode 0700) in parent and opens it;
// it checks that the directory it opened is the one it made (ours, 0700),
// not one the parent's owner put under that name.
func privateDir(parent int, base string) (string, int, error) {
	for range 10 {
		var rnd [6]byte
		rand.Read(rnd[:])
		name := "." + base + ".tmp-" + hex.EncodeToString(rnd[:])
		if err := unix.Mkdirat(parent, name, 0o700); err != nil {
			if errors.Is(err, unix.EEXIST) {
				continue
			}
			return "", -1, err
		}
		fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			// an empty directory only: never one someone filled
			unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
			return "", -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
			unix.Close(fd)
			unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
			return "", -1, fmt.Errorf("%s was replaced after it was made", name)
		}
		return name, fd, nil
	}
	return "", -1, errors.New("no free name")
}

// unixListener reports the socket's real path and, on Close, removes
// the socket only if the file at path is still the one it made. It
// holds the parent directory open: the check and the removal go through
// that descriptor, so a directory renamed or replaced on the way to it
// cannot redirect them.
type unixListener struct {
	*net.UnixListener
	addr     *net.UnixAddr
	parent   int // descriptor of the socket's directory
	base     string
	dev, ino uint64
	once     sync.Once
}

func (l *unixListener) Addr() net.Addr { return l.addr }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		var st unix.Stat_t
		if unix.Fstatat(l.parent, l.base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == l.dev && st.Ino == l.ino {
			unix.Unlinkat(l.parent, l.base, 0)
		}
		unix.Close(l.parent)
	})
	return err
}
