package dnsbl

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
)

// writeRbldnsd writes the listings, the RFC 5782 test entries included,
// as an rbldnsd "combined" dataset (an ip4trie and an ip6trie section) to
// a temporary file and renames it over RbldnsdFile, so rbldnsd never
// reads half a file.
func (p *Publisher) writeRbldnsd() error {
	p.mu.RLock()
	bans := make([]ban.Ban, 0, p.count)
	for _, m := range p.regions {
		bans = append(bans, m...)
	}
	serial := p.serial
	p.mu.RUnlock()
	slices.SortFunc(bans, func(a, b ban.Ban) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	path := p.cfg.RbldnsdFile
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	fmt.Fprintf(w, "# mxguard DNSBL %s serial %d, written %s\n", p.zone, serial, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "$TTL %d\n", p.ttl)
	for _, section := range []struct {
		dataset string
		is4     bool
	}{{"ip4trie", true}, {"ip6trie", false}} {
		fmt.Fprintf(w, "$DATASET %s @\n", section.dataset)
		for _, b := range bans {
			if b.Prefix.Addr().Is4() != section.is4 {
				continue
			}
			fmt.Fprintf(w, "%s :%s:%s\n", rbldnsdPrefix(b.Prefix), p.code(b.Detector).A, txtOf(b))
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// rbldnsdPrefix writes a single address without its length, as rbldnsd's
// examples do.
func rbldnsdPrefix(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
