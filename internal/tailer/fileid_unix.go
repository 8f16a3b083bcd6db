//go:build unix

package tailer

import (
	"os"
	"syscall"
)

// fileID returns the device and inode of fi.
func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // Dev is uint32 on some platforms
	}
	return 0, 0
}
