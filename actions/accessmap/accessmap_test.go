package accessmap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/actions/ban"
	"github.com/mxguard/mxguard/actions/command"
)

func TestAccessMapKeys(t *testing.T) {
	cases := []struct {
		prefix, typ string
		want        []string // nil: skipped
	}{
		{"203.0.113.7/32", "hash", []string{"203.0.113.7"}},
		{"203.0.113.0/24", "hash", []string{"203.0.113"}},
		{"198.51.0.0/16", "hash", []string{"198.51"}},
		{"10.0.0.0/8", "lmdb", []string{"10"}},
		{"203.0.112.0/22", "hash", []string{"203.0.112", "203.0.113", "203.0.114", "203.0.115"}},
		{"203.0.113.4/30", "hash", []string{"203.0.113.4", "203.0.113.5", "203.0.113.6", "203.0.113.7"}},
		{"2001:db8::1/128", "hash", []string{"2001:db8::1"}},
		{"2001:db8::/32", "hash", nil},
		{"2001:db8::/32", "cidr", []string{"2001:db8::/32"}},
		{"203.0.113.0/24", "cidr", []string{"203.0.113.0/24"}},
		{"203.0.113.7/32", "cidr", []string{"203.0.113.7"}},
	}
	for _, c := range cases {
		got := keys(netip.MustParsePrefix(c.prefix), c.typ)
		if fmt.Sprint(got) != fmt.Sprint(c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("keys(%s, %s) = %q, want %q", c.prefix, c.typ, got, c.want)
		}
	}
}

func TestAccessMapSanitize(t *testing.T) {
	cases := []struct{ in, want string }{
		{"dictionary attack", "dictionary attack"},
		{"a\nb\r\n  c\t", "a b c"},
		{"\x00evil\x7f ünicode", "evil nicode"},
		{strings.Repeat("x", 500), strings.Repeat("x", maxReason)},
	}
	for _, c := range cases {
		if got := sanitize(c.in); got != c.want {
			t.Errorf("sanitize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestAccessMapValidate(t *testing.T) {
	cases := []struct {
		mod  func(*Config)
		want string // "" = valid
	}{
		{func(*Config) {}, ""},
		{func(c *Config) { c.Type = "btree" }, `type "btree"`},
		{func(c *Config) { c.Path = "rel/path" }, "absolute"},
		{func(c *Config) { c.Debounce = -time.Second }, "debounce"},
		{func(c *Config) { c.ConfigDir = "/etc/postfix-out" }, ""},
		{func(c *Config) { c.ConfigDir = "etc/postfix" }, "config_dir"},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		c.mod(&cfg)
		err := cfg.Validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Validate: got %v, want %q", err, c.want)
		}
	}
}

// counter counts postmap runs and passes them on.
type counter struct {
	n    atomic.Int32
	next command.Runner
}

func (c *counter) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	c.n.Add(1)
	return c.next.Run(ctx, stdin, name, args...)
}

// postfixConfig returns the postmap program and a Postfix configuration
// directory of the test's own, or skips the test when Postfix is not
// installed. postmap will not run without a main.cf, and the system one
// may be missing (Debian's "No configuration") or say anything.
func postfixConfig(t *testing.T) (postmap, configDir string) {
	t.Helper()
	postmap, err := exec.LookPath("postmap")
	if err != nil {
		// A user's PATH on Debian lacks /usr/sbin.
		postmap, err = exec.LookPath("/usr/sbin/postmap")
	}
	if err != nil {
		t.Skip("skipping: postmap not found in PATH or /usr/sbin (apt-get install postfix)")
	}
	configDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "main.cf"), []byte("compatibility_level = 3.6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return postmap, configDir
}

// query looks key up in the map the way Postfix does, and returns the
// value or "" when the key is not there.
func query(t *testing.T, cfg Config, key string) string {
	t.Helper()
	cmd := exec.Command(cfg.Postmap, "-c", cfg.ConfigDir, "-q", key, cfg.Type+":"+cfg.Path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// Not found is exit status 1 and silence; a fatal error is also
	// status 1, but says why.
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 && stderr.Len() == 0 {
		return ""
	} else if err != nil {
		t.Fatalf("postmap -q %s: %v: %s", key, err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

func TestAccessMapPostmap(t *testing.T) {
	postmap, configDir := postfixConfig(t)
	ctx := context.Background()
	for _, typ := range []string{"hash", "cidr"} {
		t.Run(typ, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mxguard_access")
			runner := &counter{next: command.OS{}}
			cfg := Config{Enabled: true, Path: path, Type: typ, Postmap: postmap, ConfigDir: configDir, Debounce: 50 * time.Millisecond}
			a, err := New(cfg, Options{Runner: runner})
			if err != nil {
				t.Fatal(err)
			}
			b := testBan("192.0.2.1/32", time.Hour)
			b.Reason = "dictionary attack\nINJECTED  OK"
			if err := a.Apply(ctx, b); err != nil {
				t.Fatal(err)
			}
			if err := a.Apply(ctx, testBan("198.51.100.0/24", time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got, want := query(t, cfg, "192.0.2.1"), "REJECT mxguard: dictionary attack INJECTED OK"; got != want {
				t.Errorf("after ban: postmap -q = %q, want %q", got, want)
			}
			key := "198.51.100" // hash: Postfix looks up shortened forms
			if typ == "cidr" {
				key = "198.51.100.9"
			}
			if got := query(t, cfg, key); !strings.HasPrefix(got, "REJECT") {
				t.Errorf("after /24 ban: postmap -q %s = %q", key, got)
			}
			if err := a.Revoke(ctx, netip.MustParsePrefix("192.0.2.1/32")); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got := query(t, cfg, "192.0.2.1"); got != "" {
				t.Errorf("after unban: postmap -q = %q, want nothing", got)
			}

			// A burst from many goroutines: few rewrites, consistent file.
			before := runner.n.Load()
			var wg sync.WaitGroup
			for g := range 20 {
				wg.Go(func() {
					for i := range 500 {
						p := netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i)})
						if err := a.Apply(ctx, testBan(netip.PrefixFrom(p, 32).String(), time.Hour)); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(data, []byte("\tREJECT mxguard")); n != 10000+1 {
				t.Errorf("file has %d REJECT lines, want 10001", n)
			}
			if typ == "hash" {
				if runs := runner.n.Load() - before; runs > 5 {
					t.Errorf("burst of 10000 Apply ran postmap %d times, want a few", runs)
				}
				if got := query(t, cfg, "10.19.1.243"); !strings.HasPrefix(got, "REJECT") {
					t.Errorf("burst entry: postmap -q = %q", got)
				}
			}
			if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".mxguard_access.tmp-*")); len(m) != 0 {
				t.Errorf("temp files left: %v", m)
			}
		})
	}
}

func TestAccessMapErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "m")
	cfg.Postmap = "/nonexistent/postmap"
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "postmap program") {
		t.Errorf("missing postmap: got %v", err)
	}

	// Read-only directory: root ignores permissions, so use a read-only
	// tmpfs mount there; others get a 0555 directory.
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Skipf("skipping: cannot mount a read-only tmpfs: %v %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	} else if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	cfg = Config{Path: filepath.Join(dir, "m"), Type: "cidr", Debounce: time.Second}
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("read-only dir: got %v", err)
	}
	if err := writeFile(cfg.Path, []byte("x")); err == nil || !strings.Contains(err.Error(), cfg.Path) {
		t.Errorf("write to read-only dir: got %v", err)
	}

	cfg = DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "mxguard_access")
	a, err := New(cfg, Options{DryRun: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::ffff:192.0.2.1/128")} {
		if err := a.Apply(context.Background(), ban.Ban{Prefix: p}); err == nil {
			t.Errorf("Apply(%v): no error", p)
		}
	}
}

// A dry run prints the map and the postmap command and writes nothing:
// not the map, not a probe file, not a temp file.
func TestAccessMapDryRun(t *testing.T) {
	const header = "# Generated by mxguard: DO NOT EDIT. Rewritten on every ban change.\n"
	cases := []struct {
		name      string
		typ       string
		configDir string
		want      func(path string) string
	}{
		{"hash", "hash", "", func(path string) string {
			return "# would write " + path + ":\n" + header +
				"# 2 bans. Postfix map type hash:" + path + "\n" +
				"192.0.2.1\tREJECT mxguard: test ban\n" +
				"postmap hash:" + path + "\n"
		}},
		{"hash with config_dir", "hash", "/etc/postfix-out", func(path string) string {
			return "# would write " + path + ":\n" + header +
				"# 2 bans. Postfix map type hash:" + path + "\n" +
				"192.0.2.1\tREJECT mxguard: test ban\n" +
				"postmap -c /etc/postfix-out hash:" + path + "\n"
		}},
		{"cidr", "cidr", "", func(path string) string {
			return "# would write " + path + ":\n" + header +
				"# 2 bans. Postfix map type cidr:" + path + "\n" +
				"192.0.2.1\tREJECT mxguard: test ban\n" +
				"2001:db8::/48\tREJECT mxguard: test ban\n"
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			cfg := DefaultConfig()
			cfg.Path = filepath.Join(dir, "mxguard_access")
			cfg.Type = c.typ
			cfg.ConfigDir = c.configDir
			a, err := New(cfg, Options{DryRun: &out})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Sync(context.Background(), []ban.Ban{testBan("192.0.2.1/32", time.Hour), testBan("2001:db8::/48", time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if got, want := out.String(), c.want(cfg.Path); got != want {
				t.Errorf("dry run output:\n%s\nwant:\n%s", got, want)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				t.Errorf("dry run created %s", filepath.Join(dir, e.Name()))
			}
		})
	}
}

// flaky fails its first n runs.
type flaky struct {
	fail atomic.Int32
	runs atomic.Int32
}

func (f *flaky) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	f.runs.Add(1)
	if f.fail.Add(-1) >= 0 {
		return []byte("postmap: fatal: lock failed"), errors.New("exit status 1")
	}
	return nil, nil
}

// A failed background rewrite is retried by itself, and until one
// succeeds Apply reports it, so the manager retries and status shows it.
func TestAccessMapRewriteRetried(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "mxguard_access")
	cfg.Debounce = 10 * time.Millisecond
	// The runner is fake; New only needs a program to find, and postmap
	// may not be installed or in PATH.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Postmap = self
	run := &flaky{}
	run.fail.Store(2)
	a, err := New(cfg, Options{Runner: run})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ban := ban.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: "test", Until: time.Now().Add(time.Hour)}
	if err := a.Apply(context.Background(), ban); err != nil {
		t.Fatalf("first Apply: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	sawErr := false
	for {
		err := a.Apply(context.Background(), ban)
		if err != nil {
			sawErr = true
		} else if sawErr && run.runs.Load() >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rewrite not retried to success: runs %d, last error %v", run.runs.Load(), err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b, _ := os.ReadFile(cfg.Path); !strings.Contains(string(b), "192.0.2.7\tREJECT mxguard: test") {
		t.Errorf("map file:\n%s", b)
	}
}

func testBan(p string, d time.Duration) ban.Ban {
	now := time.Now()
	return ban.Ban{Prefix: netip.MustParsePrefix(p), Detector: "test", Reason: "test ban", Since: now, Until: now.Add(d)}
}
