package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/netnstest"
)

// config check shows what the runtime uses: zeros the ban manager would
// replace by defaults are refused (key and line), and a metrics endpoint
// on every interface is warned about, in the printed output (as a YAML
// comment, so that it still loads) or, with -q, on stderr.
func TestConfigCheckZerosAndWarnings(t *testing.T) {
	f := emptyConfig(t, "ban:\n  base: 0s\n  factor: 0\n  max_prefix_v4: 0\n")
	code, out, errOut := runCmd(t, "", "config", "check", "--config", f)
	for _, want := range []string{"line 2: ban.base: 0s", "line 3: ban.factor: 0", "line 4: ban.max_prefix_v4: 0"} {
		if code != 2 || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("zeros: exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, want)
		}
	}

	f = emptyConfig(t, "metrics_listen: \"0.0.0.0:9419\"\n")
	code, out, errOut = runCmd(t, "", "config", "check", "--config", f)
	want := `# warning: line 1: metrics_listen: "0.0.0.0:9419" binds all interfaces`
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "metrics_listen: 0.0.0.0:9419\n") {
		t.Errorf("warning: exit %d, stderr %q, stdout lacks %q:\n%s", code, errOut, want, out)
	}
	code, out, errOut = runCmd(t, "", "config", "check", "-q", "--config", f)
	if code != 0 || out != "" || !strings.Contains(errOut, "warning: line 1: metrics_listen:") {
		t.Errorf("-q: exit %d, stdout %q, stderr %q; want the warning on stderr", code, out, errOut)
	}
	code, out, errOut = runCmd(t, "", "config", "check", "--config", emptyConfig(t, "metrics_listen: 127.0.0.1:9419\n"))
	if code != 0 || strings.Contains(out+errOut, "warning") {
		t.Errorf("loopback: exit %d, a warning where none is due:\n%s%s", code, errOut, out)
	}
}

// With the nftables action on, config check probes the kernel's nf_tables
// features (a scratch table made and deleted in one transaction), here in
// a network namespace of the test's own so the host's ruleset is never
// touched.
func TestConfigCheckProbesNFTables(t *testing.T) {
	netnstest.Require(t, "nft")
	ns := netnstest.New(t)
	f := emptyConfig(t, "actions:\n  nftables: {enabled: true}\n")
	var code int
	var out, errOut string
	if err := netnstest.Do(ns, func() error {
		code, out, errOut = runCmd(t, "", "config", "check", "--config", f)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code != 0 || strings.Contains(out, "cannot probe") {
		t.Errorf("probe as root in a namespace: exit %d, stderr %q\n%s", code, errOut, out)
	}
	if tables, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").CombinedOutput(); err != nil || strings.TrimSpace(string(tables)) != "" {
		t.Errorf("the probe left tables behind: %s %v", tables, err)
	}
}
