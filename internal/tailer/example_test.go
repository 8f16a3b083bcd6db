package tailer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/mxguard/mxguard/internal/tailer"
)

// A daemon follows its logs, processes each line, then acknowledges it so
// that a restart continues right after the last processed line.
func ExampleFollower() {
	dir, err := os.MkdirTemp("", "tailer-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	log := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(log, []byte("line 1\nline 2\n"), 0o644); err != nil {
		fmt.Println(err)
		return
	}
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	store, err := tailer.NewBoltCheckpoints(db)
	if err != nil {
		fmt.Println(err)
		return
	}

	// follow runs a Follower until it has delivered n lines, processing
	// and acknowledging each, then stops it as a daemon shuts down.
	follow := func(n int) {
		// Without a checkpoint, FromStart reads the existing lines.
		f, err := tailer.New(tailer.Config{Paths: []string{log}, FromStart: true}, store)
		if err != nil {
			fmt.Println(err)
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		lines := make(chan tailer.Line, 256)
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx, lines) }()
		for range n {
			l := <-lines
			fmt.Println("processed:", l.Text) // parse, detect, act...
			f.Ack(l)
		}
		// Run saves the acknowledged position before it returns.
		cancel()
		if err := <-done; err != nil {
			fmt.Println(err)
		}
	}

	follow(2)
	pos, _, err := store.LoadPosition(log)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("saved offset:", pos.Offset)

	// Written while the daemon was down; the restart reads only this.
	lf, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Fprintln(lf, "line 3")
	lf.Close()
	follow(1)

	// Output:
	// processed: line 1
	// processed: line 2
	// saved offset: 14
	// processed: line 3
}
