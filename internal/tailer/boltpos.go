package tailer

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// positionsBucket holds one JSON Position per configured path.
var positionsBucket = []byte("positions")

// BoltCheckpoints keeps read positions in a bucket of their own in a bbolt
// database (the daemon's block list file: one process, one lock).
type BoltCheckpoints struct{ db *bolt.DB }

// NewBoltCheckpoints creates the positions bucket in db if it is missing.
func NewBoltCheckpoints(db *bolt.DB) (*BoltCheckpoints, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(positionsBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoints in %s: %w", db.Path(), err)
	}
	return &BoltCheckpoints{db: db}, nil
}

// LoadPosition implements Checkpointer.
func (c *BoltCheckpoints) LoadPosition(path string) (Position, bool, error) {
	var (
		pos Position
		ok  bool
	)
	err := c.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(positionsBucket).Get([]byte(path))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &pos)
	})
	if err != nil {
		return Position{}, false, fmt.Errorf("load position of %s from %s: %w", path, c.db.Path(), err)
	}
	return pos, ok, nil
}

// SavePosition implements Checkpointer.
func (c *BoltCheckpoints) SavePosition(path string, pos Position) error {
	return c.db.Update(func(tx *bolt.Tx) error { return c.saveTx(tx, path, pos) })
}

// saveTx saves pos in tx, a write transaction on c's database.
func (c *BoltCheckpoints) saveTx(tx *bolt.Tx, path string, pos Position) error {
	v, err := json.Marshal(pos)
	if err == nil {
		err = tx.Bucket(positionsBucket).Put([]byte(path), v)
	}
	if err != nil {
		return fmt.Errorf("save position of %s to %s: %w", path, c.db.Path(), err)
	}
	return nil
}
