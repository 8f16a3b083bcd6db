package dnsbl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// serialReserve is how far ahead of the serial in use the high-water mark
// on disk is written: one write per this many changes, and a restart
// after a crash starts above every serial a secondary may have seen.
const serialReserve = 1000

// serialKeeper makes the zone serial increase on every change and across
// restarts: the serial is at least the clock (seconds since 1970, so a
// restart after a lost state file still starts above what secondaries
// hold, as long as changes averaged under one a second) and never above
// the mark kept on disk.
type serialKeeper struct {
	path string
	mark uint32 // on disk; every serial handed out is ≤ mark
}

// openSerial reads the mark (a missing file is no mark) and returns the
// first serial: above the mark and at least now.
func openSerial(path string, now time.Time) (*serialKeeper, uint32, error) {
	k := &serialKeeper{path: path}
	var last uint32
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, 0, fmt.Errorf("dnsbl serial: %w", err)
		default:
			v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
			if err != nil {
				return nil, 0, fmt.Errorf("dnsbl serial %s: %q is not a serial: %w", path, strings.TrimSpace(string(b)), err)
			}
			last = uint32(v)
		}
	}
	first := max(last+1, clockSerial(now))
	if err := k.reserve(first); err != nil {
		return nil, 0, err
	}
	return k, first, nil
}

func clockSerial(now time.Time) uint32 { return uint32(now.Unix()) }

// next returns the serial after cur (at least the clock), moving the
// mark on disk first when it would be passed. When the mark cannot be
// written the serial still increases (the zone must change) and the
// error says that a restart may not start above it.
func (k *serialKeeper) next(cur uint32, now time.Time) (uint32, error) {
	s := max(cur+1, clockSerial(now))
	if s > k.mark {
		return s, k.reserve(s)
	}
	return s, nil
}

// reserve writes a mark above s (atomically: temp file, fsync, rename).
func (k *serialKeeper) reserve(s uint32) error {
	mark := s + serialReserve
	if k.path == "" {
		k.mark = mark
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".dnsbl-serial-*")
	if err != nil {
		return fmt.Errorf("dnsbl serial: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := fmt.Fprintf(tmp, "%d\n", mark); err != nil {
		tmp.Close()
		return fmt.Errorf("dnsbl serial: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("dnsbl serial: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("dnsbl serial: %w", err)
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return fmt.Errorf("dnsbl serial: %w", err)
	}
	k.mark = mark
	return nil
}
