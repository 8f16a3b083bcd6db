package tailer

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// AckWith saves a line's position in the consumer's own transaction, only
// when that commits, and a later checkpoint neither goes back behind it nor
// keeps its Partial once the line is acknowledged in full.
func TestAckWith(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "mxguard.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cp, err := NewBoltCheckpoints(db)
	if err != nil {
		t.Fatal(err)
	}
	const path = "/var/log/mail.log"
	f, err := New(Config{Paths: []string{path}}, cp)
	if err != nil {
		t.Fatal(err)
	}
	line := func(off int64, partial int) Line {
		return Line{Path: path, Pos: Position{Dev: 1, Inode: 2, Offset: off, Partial: partial}}
	}
	saved := func() Position {
		t.Helper()
		p, _, err := cp.LoadPosition(path)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	effect := []byte("effect")
	commit := func(fail bool) func(save func(*bolt.Tx) error) error {
		return func(save func(*bolt.Tx) error) error {
			return db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists(effect)
				if err == nil {
					err = b.Put(effect, effect)
				}
				if err == nil {
					err = save(tx)
				}
				if err == nil && fail {
					err = errors.New("disk full")
				}
				return err
			})
		}
	}

	f.Ack(line(100, 0))
	if err := f.AckWith(line(200, 1), commit(true)); err == nil {
		t.Fatal("AckWith: a failed commit was not reported")
	}
	if p := saved(); p.Offset != 0 {
		t.Errorf("after a failed commit the position %+v was saved", p)
	}
	if err := f.AckWith(line(200, 1), commit(false)); err != nil {
		t.Fatal(err)
	}
	if p := saved(); p.Offset != 200 || p.Partial != 1 {
		t.Errorf("after AckWith: saved %+v, want offset 200, partial 1", p)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if p := saved(); p.Offset != 200 || p.Partial != 1 {
		t.Errorf("a checkpoint after AckWith saved %+v, want offset 200, partial 1", p)
	}
	f.Ack(line(200, 0)) // the line's processing is complete
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if p := saved(); p.Offset != 200 || p.Partial != 0 {
		t.Errorf("after the line was acknowledged: saved %+v, want offset 200, partial 0", p)
	}
}
