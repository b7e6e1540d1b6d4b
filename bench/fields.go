package bench

import (
	"encoding/json"
	"unicode/utf8"
)

// This file reads the few fields the bench needs from each grant response.
// encoding/json into a struct would allocate and reflect on every one of up
// to a million responses a second, in the process that is meant to measure
// the node rather than itself; a scan for `"status":"` was rejected because
// the same bytes can sit inside another string (an error message). So the
// top-level members of the object are walked properly and only the ones
// asked for are kept.

// grantFields holds top-level string members of a grant or error response.
// A member that is absent, or is not a string, is nil. The slices alias the
// body unless the string held escapes.
type grantFields struct {
	status []byte
	code   []byte
	token  []byte
}

// parseGrantFields fills f from body, a JSON object. It returns false when
// body is not an object; it does not validate the values it skips (numbers,
// nested objects), so it may accept some invalid JSON, but on valid JSON it
// agrees with encoding/json: escapes are decoded, invalid UTF-8 becomes
// U+FFFD, and the last of duplicate members wins.
func parseGrantFields(body []byte, f *grantFields) bool {
	*f = grantFields{}
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return skipSpace(body, i+1) == len(body)
	}
	for {
		if i >= len(body) || body[i] != '"' {
			return false
		}
		key, next, ok := scanString(body, i)
		if !ok {
			return false
		}
		i = skipSpace(body, next)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		i = skipSpace(body, i+1)
		if i >= len(body) {
			return false
		}
		var value []byte
		if body[i] == '"' {
			if value, next, ok = scanString(body, i); !ok {
				return false
			}
			if value == nil {
				value = []byte{} // An empty string is present, unlike an absent member.
			}
		} else if next, ok = skipValue(body, i); !ok {
			return false
		}
		switch string(key) {
		case "status":
			f.status = value
		case "code":
			f.code = value
		case "token":
			f.token = value
		}
		i = skipSpace(body, next)
		if i >= len(body) {
			return false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return skipSpace(body, i+1) == len(body)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString reads the string whose opening quote is at b[i] and returns its
// decoded contents and the index after its closing quote. The contents alias
// b when the string holds no escapes and is valid UTF-8, the common case.
func scanString(b []byte, i int) (s []byte, next int, ok bool) {
	start := i + 1
	plain := true
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			raw := b[start:j]
			if plain && utf8.Valid(raw) {
				return raw, j + 1, true
			}
			var decoded string
			if json.Unmarshal(b[i:j+1], &decoded) != nil {
				return nil, 0, false
			}
			return []byte(decoded), j + 1, true
		case c == '\\':
			plain = false
			j++ // The escaped byte cannot end the string.
		case c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipValue steps over the non-string value at b[i] and returns the index
// after it. Nested objects and arrays are skipped by depth, with the strings
// inside them read so that brackets in strings do not count.
func skipValue(b []byte, i int) (next int, ok bool) {
	start, depth := i, 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			if depth == 0 {
				return 0, false // Strings are the caller's.
			}
			if _, i, ok = scanString(b, i); !ok {
				return 0, false
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i, i > start // Ends a scalar member.
			}
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i, i > start
			}
		}
		i++
	}
	return i, depth == 0 && i > start
}
