package journal

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// Export runs `journalctl --output=json` over the entries of the journal
// that spec selects ("journal" or "journal:ID1,ID2", as in logs:) between
// since and until (zero: no bound), for report, events and replay, as the
// syslog lines the follower makes of them: read the stream like any log.
// Close waits for journalctl and reports its failure with its last stderr
// line.
func Export(journalctl, spec string, since, until time.Time) (io.ReadCloser, error) {
	f, err := NewFilter(spec)
	if err != nil {
		return nil, err
	}
	if journalctl == "" {
		journalctl = "journalctl"
	}
	args := []string{"--output=json", "--no-pager", "--quiet"}
	// to the microsecond, as the journal stamps entries; --until is
	// inclusive, until is not
	if !since.IsZero() {
		args = append(args, "--since="+epoch(since))
	}
	if !until.IsZero() {
		args = append(args, "--until="+epoch(until.Add(-time.Microsecond)))
	}
	args = append(args, f.Matches()...)
	cmd := exec.Command(journalctl, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("journal: %s: %w", journalctl, err)
	}
	jr := NewJSONReader(out)
	jr.filter = &f // journalctl matches exact identifiers only
	return &export{Reader: jr, out: out, cmd: cmd, stderr: &stderr}, nil
}

// export is journalctl's output as syslog lines.
// epoch is t as journalctl's "@SECONDS.MICROSECONDS".
func epoch(t time.Time) string {
	us := t.UnixMicro()
	return fmt.Sprintf("@%d.%06d", us/1e6, us%1e6)
}

type export struct {
	io.Reader
	out    io.Closer
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func (e *export) Close() error {
	e.out.Close()
	if err := e.cmd.Wait(); err != nil {
		msg := strings.TrimSpace(e.stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return fmt.Errorf("journal: %s: %w: %s", e.cmd.Path, err, msg)
	}
	return nil
}
