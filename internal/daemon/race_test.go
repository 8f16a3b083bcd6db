//go:build race

package daemon

// raceDetector: the race detector multiplies memory and time, so memory
// bounds are checked without it.
const raceDetector = true
