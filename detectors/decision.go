package detectors

import (
	"net/netip"
	"time"
)

// Decision is a detector's verdict that a client (an address, or a prefix
// after escalation) should be banned.
type Decision struct {
	Prefix   netip.Prefix // /32 or /128 for one address, wider after prefix escalation
	Detector string       // detector name, e.g. "dictionary"
	Reason   string       // short human reason, e.g. "5 unknown recipients in 10m0s"
	Evidence int          // how many events led to it
	Time     time.Time    // time of the event that triggered it (log time, not wall time)
	Lines    []string     // a few raw lines that caused it (evidence)
	Warn     bool         // detector is in warn mode: log, do not ban
}
