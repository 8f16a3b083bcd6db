package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Without /proc the socket is bound by name in the private directory:
// refused where the parent's owner (neither root nor us) could rename
// that directory and put one of theirs in its place.
func TestBindPathWithoutProc(t *testing.T) {
	const euid = 1000
	tests := []struct {
		name      string
		parentUID uint32
		haveProc  bool
		want      string // "" : refused
	}{
		{"through /proc", 107, true, "/proc/self/fd/7/" + sockName},
		{"parent owned by root", 0, false, "/run/pol/.p.tmp-1/" + sockName},
		{"parent owned by us", euid, false, "/run/pol/.p.tmp-1/" + sockName},
		{"parent owned by another user", 107, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bindPathFor("/run/pol/", ".p.tmp-1", 7, tt.parentUID, tt.haveProc, euid)
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), "/proc") {
					t.Fatalf("bound at %q, err %v; want a refusal naming /proc", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("%q %v, want %q", got, err, tt.want)
			}
		})
	}
}

// Close checks and removes the socket through its descriptor of the
// directory: with the directory renamed and another put at its name, it
// removes our socket where it is now and leaves the new one alone.
func TestListenerCloseGoesThroughTheDirectory(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "private")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mxguard")
	cfg := testConfig(t)
	cfg.Listen = "unix:" + path
	s, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(root, "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Lstat(filepath.Join(moved, "mxguard")); err == nil {
		t.Error("our socket, in the renamed directory, was left behind")
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the file now at the socket's path was touched: %v", err)
	}
	// and nothing of the private directory is left
	for _, d := range []string{dir, moved} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("%s left in %s", e.Name(), d)
			}
		}
	}
}
