package tailer_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/mxguard/mxguard/internal/tailer"
)

// A daemon follows its logs, processes each line, then acknowledges it so
// that a restart continues right after the last processed line.
func ExampleFollower() {
	var store tailer.Checkpointer // e.g. an adapter over actions.Store
	f, err := tailer.New(tailer.Config{
		Paths:  []string{"/var/log/mail.log"},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}, store)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan tailer.Line, 256)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, lines) }()
	go func() {
		for l := range lines {
			_ = l.Text // parse, detect, act...
			f.Ack(l)
		}
	}()
	// On shutdown: cancel(), wait for Run, stop the consumer, then
	// f.Checkpoint() to save what it acknowledged after Run returned.
	cancel()
	if err := <-done; err != nil {
		fmt.Println(err)
	}
}
