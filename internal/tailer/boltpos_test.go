package tailer

import (
	"bytes"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestBoltCheckpointsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mxguard.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := NewBoltCheckpoints(db)
	if err != nil {
		t.Fatal(err)
	}
	pos := Position{Dev: 2049, Inode: 1234, Offset: 4567, Size: 9000, Head: []byte{1, 2, 3}}
	if err := cp.SavePosition("/var/log/mail.log", pos); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if cp, err = NewBoltCheckpoints(db); err != nil {
		t.Fatal(err)
	}
	p, ok, err := cp.LoadPosition("/var/log/mail.log")
	if err != nil || !ok || p.Inode != 1234 || p.Offset != 4567 || !bytes.Equal(p.Head, []byte{1, 2, 3}) {
		t.Errorf("LoadPosition = %+v %v %v", p, ok, err)
	}
	if _, ok, _ := cp.LoadPosition("/var/log/other.log"); ok {
		t.Error("LoadPosition of unknown path found something")
	}
}
