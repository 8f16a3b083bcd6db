package peers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/miekg/dns"
)

// A follower keeps its copy of the peer's zone in state_dir, as a
// secondary DNS server keeps its zone file: after a restart the peer's
// bans are back at once, even while the peer cannot be reached, and the
// first transfer is an IXFR from the saved serial. The file's
// modification time is the last contact with the primary (touched at
// every successful check): the saved bans last at most max_ban from it.

// saveEvery bounds how often the file is written (100k listings take
// about a second): a peer whose zone changes every few seconds costs one
// write a minute, and at most a minute of changes is missing from the
// file after a crash (a clean stop writes it).
const saveEvery = time.Minute

// saveNow writes the zone not saved yet, if any.
func (f *Follower) saveNow() {
	if f.unsaved == nil {
		return
	}
	if err := f.save(f.unsaved); err != nil {
		f.log.Warn("peer zone not saved", "err", err) // the bans are in force all the same
		return
	}
	f.unsaved, f.savedAt = nil, f.now()
}

// SetStateDir makes the follower keep its zone in dir/NAME.zone (""
// keeps nothing: a dry run).
func (f *Follower) SetStateDir(dir string) {
	if dir == "" {
		f.savePath = ""
		return
	}
	f.savePath = filepath.Join(dir, f.cfg.Name+".zone")
}

// save writes z atomically (a temporary file renamed over the old one).
func (f *Follower) save(z *zone) error {
	if f.savePath == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(f.savePath), 0o700); err != nil {
		return fmt.Errorf("save peer zone: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.savePath), "."+f.cfg.Name+".zone.*")
	if err != nil {
		return fmt.Errorf("save peer zone: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing left to remove
	w := bufio.NewWriterSize(tmp, 1<<16)
	fmt.Fprintf(w, "; mxguard: the zone of peer %s as last transferred from %s\n", f.cfg.Name, f.cfg.Primary)
	fmt.Fprintln(w, z.soa.String())
	for name, n := range z.names {
		for _, a := range n.a {
			fmt.Fprintf(w, "%s 0 IN A %s\n", name, a)
		}
		for _, t := range n.txt {
			rr := &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: splitTXT(t)}
			fmt.Fprintln(w, rr.String())
		}
	}
	if err := errors.Join(w.Flush(), tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("save peer zone %s: %w", f.savePath, err)
	}
	if err := os.Rename(tmp.Name(), f.savePath); err != nil {
		return fmt.Errorf("save peer zone: %w", err)
	}
	return nil
}

// splitTXT cuts a joined TXT text back into strings of at most 255 bytes.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// touch records a successful contact with the primary.
func (f *Follower) touch(now time.Time) {
	if f.savePath == "" {
		return
	}
	if err := os.Chtimes(f.savePath, now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.log.Warn("peer zone file", "path", f.savePath, "err", err)
	}
}

// load reads the saved zone; it returns nil when there is none or it is
// older than max_ban (its bans would all be over).
func (f *Follower) load() (*zone, time.Time, error) {
	if f.savePath == "" {
		return nil, time.Time{}, nil
	}
	file, err := os.Open(f.savePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load peer zone: %w", err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load peer zone: %w", err)
	}
	contact := fi.ModTime()
	if f.now().Sub(contact) >= f.cfg.MaxBan.D() {
		return nil, contact, nil
	}
	zp := dns.NewZoneParser(bufio.NewReaderSize(file, 1<<16), f.origin, f.savePath)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, contact, fmt.Errorf("load peer zone: %w", err)
	}
	if len(rrs) > 0 {
		rrs = append(rrs, rrs[0]) // the SOA again, as in a transfer
	}
	z, err := fullZone(f.origin, rrs, f.cfg.MaxEntries)
	if err != nil {
		return nil, contact, fmt.Errorf("load peer zone %s: %w", f.savePath, err)
	}
	return z, contact, nil
}

// restore puts the saved zone's bans in force before the first check,
// with max_ban counted from the last contact.
func (f *Follower) restore(ctx context.Context) {
	z, contact, err := f.load()
	if err != nil {
		f.log.Warn("saved peer zone not used", "err", err)
		return
	}
	if z == nil {
		return
	}
	f.mu.Lock()
	f.z = z
	f.status.Serial, f.status.HaveZone, f.status.LastKind = z.soa.Serial, true, "saved"
	f.status.LastCheck = contact
	f.mu.Unlock()
	if err := f.mirrorZone(ctx, z, contact); err != nil {
		f.log.Warn("saved peer zone not mirrored", "err", err)
		return
	}
	f.log.Info("peer zone restored from state_dir", "serial", z.soa.Serial, "last_contact", contact, "path", f.savePath)
}
