package ban

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	cases := []Ban{
		{},
		{Prefix: netip.MustParsePrefix("203.0.113.7/32"), Detector: "dictionary", Reason: "5 unknown recipients within 10m",
			Evidence: 5, Since: t0, Until: t0.Add(time.Hour), Offence: 2},
		{Prefix: netip.MustParsePrefix("2001:db8::/48"), Detector: "manual", Reason: "quote \" back\\slash\nline\ttab <b>&amp; \x01\x7f é 日本 \u2028\u2029 bad\xff\xfeutf8",
			Evidence: -1, Since: t0.In(time.FixedZone("X", -3*3600)), Until: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), DryRun: true},
	}
	for _, b := range cases {
		want, err := json.Marshal(b)
		if err != nil {
			// encoding/json refuses years past 9999; AppendJSON writes null there
			b.Until = time.Time{}
			if _, err = json.Marshal(b); err != nil {
				t.Fatal(err)
			}
			b.Until = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
			got := string(b.AppendJSON(nil))
			var back map[string]any
			if err := json.Unmarshal([]byte(got), &back); err != nil || back["until"] != nil {
				t.Errorf("year 10000: %s (%v)", got, err)
			}
			continue
		}
		if got := string(b.AppendJSON(nil)); got != string(want) {
			t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("dictionary", "5 unknown recipients", int64(0), int64(3600))
	f.Add("x\"<>&\x00\xff", "\u2028é", int64(-62135596800), int64(253402300799))
	f.Fuzz(func(t *testing.T, detector, reason string, since, until int64) {
		b := Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Detector: detector, Reason: reason,
			Since: time.Unix(since, 0).UTC(), Until: time.Unix(until, 0).UTC(), Offence: 1}
		want, err := json.Marshal(b)
		if err != nil {
			return // a year outside 0..9999
		}
		if got := b.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
		}
	})
}
