package detectors

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/internal/event"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/detectors")

type goldenDecision struct {
	Prefix   string   `json:"prefix"`
	Detector string   `json:"detector"`
	Reason   string   `json:"reason"`
	Evidence int      `json:"evidence"`
	Time     string   `json:"time"`
	Warn     bool     `json:"warn,omitempty"`
	Lines    []string `json:"lines,omitempty"`
}

// TestGolden feeds testdata/detectors/NN-name.events.jsonl (one event a
// line in the `mxguard events` shape, plus "raw" for the log line) to an
// engine configured by NN-name.config.yaml if present (strictly decoded
// over the defaults) and compares the decisions with NN-name.decisions.json.
// The output is always written to NN-name.decisions.json.got; -update
// replaces the golden file.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.FromSlash("../testdata/detectors/*.events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, f := range files {
		base := strings.TrimSuffix(f, ".events.jsonl")
		t.Run(filepath.Base(base), func(t *testing.T) {
			cfg := DefaultConfig()
			if src, err := os.ReadFile(base + ".config.yaml"); err == nil {
				dec := yaml.NewDecoder(bytes.NewReader(src))
				dec.KnownFields(true)
				if err := dec.Decode(&cfg); err != nil {
					t.Fatalf("%s.config.yaml: %v", base, err)
				}
			} else if !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			e, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			in, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			got := []goldenDecision{}
			sc := bufio.NewScanner(in)
			for n := 1; sc.Scan(); n++ {
				line := bytes.TrimSpace(sc.Bytes())
				if len(line) == 0 || line[0] == '#' {
					continue
				}
				var ev event.Event
				var raw struct{ Raw string }
				if err := json.Unmarshal(line, &ev); err != nil {
					t.Fatalf("%s:%d: %v", f, n, err)
				}
				if err := json.Unmarshal(line, &raw); err != nil {
					t.Fatalf("%s:%d: %v", f, n, err)
				}
				ev.Raw = raw.Raw
				for _, d := range e.Observe(ev) {
					got = append(got, goldenDecision{Prefix: d.Prefix.String(), Detector: d.Detector, Reason: d.Reason,
						Evidence: d.Evidence, Time: d.Time.Format(time.RFC3339), Warn: d.Warn, Lines: d.Lines})
				}
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false) // keep <user@example.org> readable
			enc.SetIndent("", "  ")
			if err := enc.Encode(got); err != nil {
				t.Fatal(err)
			}
			out := buf.Bytes()
			golden := base + ".decisions.json"
			if err := os.WriteFile(golden+".got", out, 0o644); err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(want, out) {
				t.Errorf("%s differs from %s.got", golden, golden)
			}
		})
	}
}
