// Package logparse turns Postfix log lines into typed Events.
//
// Parse is pure: no I/O, no clock, no state across lines. The strings in an
// event.Event are substrings of the line it was parsed from; callers that keep an
// event.Event beyond the life of the line's buffer must call event.Event.Clone.
package logparse

import (
	"errors"
)

// ErrUnrecognized means the line is not one that mxguard understands. It is
// expected (most of a mail log is of no interest): count it, do not log it.
var ErrUnrecognized = errors.New("logparse: unrecognized line")
