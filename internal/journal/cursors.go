package journal

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// cursorsBucket holds one journal cursor per logs entry ("journal", or
// "journal:ID,..."), next to the file positions of package tailer.
var cursorsBucket = []byte("journal_cursors")

// BoltCursors keeps journal cursors in a bucket of their own in a bbolt
// database (the daemon's block list file).
type BoltCursors struct{ db *bolt.DB }

// NewBoltCursors creates the cursors bucket in db if it is missing.
func NewBoltCursors(db *bolt.DB) (*BoltCursors, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(cursorsBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("journal cursors in %s: %w", db.Path(), err)
	}
	return &BoltCursors{db: db}, nil
}

// Load returns the cursor saved for key, "" if none.
func (c *BoltCursors) Load(key string) (string, error) {
	var cur string
	err := c.db.View(func(tx *bolt.Tx) error {
		cur = string(tx.Bucket(cursorsBucket).Get([]byte(key)))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("load journal cursor of %s from %s: %w", key, c.db.Path(), err)
	}
	return cur, nil
}

// Save stores cursor for key.
func (c *BoltCursors) Save(key, cursor string) error {
	return c.db.Update(func(tx *bolt.Tx) error { return c.saveTx(tx, key, cursor) })
}

func (c *BoltCursors) saveTx(tx *bolt.Tx, key, cursor string) error {
	if err := tx.Bucket(cursorsBucket).Put([]byte(key), []byte(cursor)); err != nil {
		return fmt.Errorf("save journal cursor of %s to %s: %w", key, c.db.Path(), err)
	}
	return nil
}
