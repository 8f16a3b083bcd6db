package store

import (
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// PutWith's extra write and the ban are one transaction: both are stored,
// or, when the extra write fails, neither.
func TestStorePutWith(t *testing.T) {
	s := openTest(t, "")
	mark := []byte("mark")
	also := func(fail bool) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(mark)
			if err != nil {
				return err
			}
			if err := b.Put(mark, []byte("line 7")); err != nil {
				return err
			}
			if fail {
				return errors.New("no position")
			}
			return nil
		}
	}
	marked := func() string {
		var v []byte
		_ = s.DB().View(func(tx *bolt.Tx) error {
			if b := tx.Bucket(mark); b != nil {
				v = b.Get(mark)
			}
			return nil
		})
		return string(v)
	}
	r := rec("192.0.2.7/32", t0, time.Hour)
	if err := s.PutWith(r, also(true)); err == nil {
		t.Fatal("PutWith: the failed extra write was not reported")
	}
	if _, ok, _ := s.Get(r.Prefix); ok || marked() != "" {
		t.Errorf("after a failed PutWith: ban stored %v, mark %q; want neither", ok, marked())
	}
	if err := s.PutWith(r, also(false)); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.Get(r.Prefix); !ok || got.Evidence != r.Evidence || marked() != "line 7" {
		t.Errorf("after PutWith: ban %+v (stored %v), mark %q", got, ok, marked())
	}
	if h, _, _ := s.History(r.Prefix); len(h.Times) != 1 {
		t.Errorf("history = %+v, want one offence", h)
	}
}
