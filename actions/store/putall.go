package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// PutAll stores rs in order, as Put would one by one, in one transaction:
// all of them or, on error, none. The ban Manager writes the bans a full
// disk held back with it, one sync per batch instead of one per ban.
func (s *Store) PutAll(rs []Record) error {
	for _, r := range rs {
		if !r.Prefix.IsValid() {
			return fmt.Errorf("store %s: put: invalid prefix", s.path)
		}
	}
	err := s.update(func(tx *bolt.Tx) error {
		for _, r := range rs {
			if len(r.Lines) > MaxLines {
				r.Lines = r.Lines[len(r.Lines)-MaxLines:]
			}
			if err := putRecord(tx, r); err != nil {
				return fmt.Errorf("put %s: %w", r.Prefix, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store %s: put %d records: %w", s.path, len(rs), err)
	}
	return nil
}
