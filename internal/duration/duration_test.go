package duration

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"10m", 10 * time.Minute, ""},
		{" 1h30m ", 90 * time.Minute, ""},
		{"300ms", 300 * time.Millisecond, ""},
		{"7d", 7 * 24 * time.Hour, ""},
		{"0", 0, ""},
		{"10", 0, `invalid duration "10"`},
		{"1x", 0, `invalid duration "1x"`},
		{"xd", 0, `invalid duration "xd"`},
		{"-5m", 0, `negative duration "-5m"`},
		{"-2d", 0, `negative duration "-2d"`},
		{"", 0, `invalid duration ""`},
		{"300000d", 0, `too long`},
		{"106751d", 106751 * 24 * time.Hour, ""},
		// Above the maximum every form is an error naming the maximum,
		// never a wrapped-around or "negative" value.
		{"106752d", 0, `"106752d" is too long (at most 106751d)`},
		{"213504d", 0, `"213504d" is too long (at most 106751d)`},
		{"1000000d", 0, `"1000000d" is too long (at most 106751d)`},
		{"9999999999d", 0, `"9999999999d" is too long (at most 106751d)`},
		{"99999999999999999999d", 0, `is too long (at most 106751d)`},
		{"2562024h", 106751 * 24 * time.Hour, ""},
		{"2562025h", 0, `"2562025h" is too long (at most 106751d)`},
		{"2562048h", 0, `"2562048h" is too long (at most 106751d)`},
		{"9999999999999h", 0, `is too long (at most 106751d)`},
		{"1e3h", 0, `invalid duration "1e3h"`},
		{"-300000d", 0, `negative duration "-300000d"`},
		{"-2562048h", 0, `negative duration "-2562048h"`},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.D() != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestYAML(t *testing.T) {
	var v struct {
		W Duration `yaml:"w"`
	}
	if err := yaml.Unmarshal([]byte("w: 1h0m0s\n"), &v); err != nil || v.W.D() != time.Hour {
		t.Fatalf("got %v %v", v.W, err)
	}
	out, _ := yaml.Marshal(v)
	if string(out) != "w: 1h\n" {
		t.Errorf("marshal %q", out)
	}
	err := yaml.Unmarshal([]byte("\nw: 10\n"), &v)
	if err == nil || !strings.Contains(err.Error(), `line 2: invalid duration "10"`) {
		t.Errorf("bare number: %v", err)
	}
	if err := yaml.Unmarshal([]byte("w: [1m]\n"), &v); err == nil || !strings.Contains(err.Error(), "want a duration") {
		t.Errorf("sequence: %v", err)
	}
}
