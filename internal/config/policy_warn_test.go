package config

import (
	"strings"
	"testing"
)

// The policy service's warnings name their key and line.
func TestPolicyWarnings(t *testing.T) {
	c, err := Load(write(t, "policy:\n  enabled: true\n  listen: \"inet:0.0.0.0:10040\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ws := c.Warnings()
	if len(ws) != 1 || !strings.HasPrefix(ws[0], "line 3: policy.listen: ") || !strings.Contains(ws[0], "not a loopback address") {
		t.Fatalf("warnings %q, want one naming line 3 and policy.listen", ws)
	}
}
