package daemon

import (
	"strings"
	"testing"
)

// The daemon logs the config's warnings at start (a metrics endpoint on
// every interface). Only open runs: nothing binds.
func TestOpenLogsConfigWarnings(t *testing.T) {
	for _, tc := range []struct {
		listen string
		warn   bool
	}{{":9419", true}, {"[::]:9419", true}, {"127.0.0.1:9419", false}, {"", false}} {
		cfg := newTestConfig(t)
		cfg.MetricsListen = tc.listen
		logs := &syncBuffer{}
		d, err := open(cfg, Options{LogOutput: logs})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.shutdown(); err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "binds all interfaces")
		if got != tc.warn {
			t.Errorf("metrics_listen %q: warned %v, want %v\n%s", tc.listen, got, tc.warn, logs)
		}
	}
}
