// Package logparse turns Postfix log lines into typed Events.
//
// Parse does no I/O and reads no clock. Its only state across lines is a
// fixed-size table of the client each smtpd process serves, so that a
// warning that names none ("TLS library problem") can be attributed. The
// strings in an event.Event are substrings of the line it was parsed from;
// callers that keep an event.Event beyond the life of the line's buffer
// must call event.Event.Clone.
package logparse

import (
	"errors"
)

// ErrUnrecognized means the line is not one that mxguard understands. It is
// expected (most of a mail log is of no interest): count it, do not log it.
var ErrUnrecognized = errors.New("logparse: unrecognized line")

// ErrContext means the line is a known Postfix line that concerns the mail
// system, not a client (daemon start and stop, table reloads, TLS summaries,
// postscreen's cache cleanup, anvil's statistics): recognised, yet no
// event. Count it apart from ErrUnrecognized.
var ErrContext = errors.New("logparse: context line")
