package ban

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends b exactly as encoding/json encodes it, without
// reflection: the control socket streams the whole block list with it
// (100k bans in a fraction of the time). A test holds the two equal.
func (b Ban) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"ip":"`...)
	dst = b.Prefix.AppendTo(dst)
	dst = append(dst, `","detector":`...)
	dst = appendJSONString(dst, b.Detector)
	dst = append(dst, `,"reason":`...)
	dst = appendJSONString(dst, b.Reason)
	dst = append(dst, `,"evidence":`...)
	dst = strconv.AppendInt(dst, int64(b.Evidence), 10)
	dst = append(dst, `,"since":`...)
	dst = appendJSONTime(dst, b.Since)
	dst = append(dst, `,"until":`...)
	dst = appendJSONTime(dst, b.Until)
	dst = append(dst, `,"offence":`...)
	dst = strconv.AppendInt(dst, int64(b.Offence), 10)
	if b.DryRun {
		dst = append(dst, `,"dry_run":true`...)
	}
	return append(dst, '}')
}

// appendJSONTime is time.Time's MarshalJSON (RFC 3339 with nanoseconds);
// years outside 0..9999, which it refuses, are written as null.
func appendJSONTime(dst []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does by default: control
// characters, <, > and & as \u escapes, invalid UTF-8 as U+FFFD, U+2028
// and U+2029 escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c == '\b':
				dst = append(dst, '\\', 'b')
			case c == '\f':
				dst = append(dst, '\\', 'f')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
