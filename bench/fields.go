package bench

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"unicode/utf8"
)

// This file reads the few fields the bench needs from each grant response,
// and from each item of a batch grant response. encoding/json into a struct
// would allocate and reflect on every one of up to a million responses a
// second, in the process that is meant to measure the node rather than
// itself; a scan for `"status":"` was rejected because the same bytes can
// sit inside another string (an error message). So the top-level members of
// the object (and of each item) are walked properly and only the ones asked
// for are kept.

// grantFields holds top-level string members of a grant or error response,
// or of one item of a batch response. A member that is absent, or is not a
// string, is nil. The slices alias the body unless the string held escapes.
type grantFields struct {
	status  []byte
	code    []byte
	token   []byte
	message []byte
}

// parseGrantFields fills f from body, a JSON object. It returns false when
// body is not an object; it does not validate the values it skips (numbers,
// nested objects), so it may accept some invalid JSON, but on valid JSON it
// agrees with encoding/json: escapes are decoded, invalid UTF-8 becomes
// U+FFFD, and the last of duplicate members wins.
func parseGrantFields(body []byte, f *grantFields) bool {
	next, ok := scanObject(body, skipSpace(body, 0), f, nil)
	return ok && skipSpace(body, next) == len(body)
}

// parseBatchResults reads the answer to a batch grant request, a JSON
// object such as {"results":[{...},{...}]}: it returns items[:0] with the
// fields of each item of the "results" array appended, in order. It returns
// false when body is not an object, when its "results" member is absent or
// is not an array of objects, or when that array holds more than itemsMax
// items, so that a wrong answer cannot grow items without bound. It is as
// lenient with skipped values as parseGrantFields, and as faithful to
// encoding/json on valid JSON: other members are skipped, and of duplicate
// "results" members the last one counts.
func parseBatchResults(body []byte, items []grantFields, itemsMax int) ([]grantFields, bool) {
	results := resultsScan{items: items[:0], itemsMax: itemsMax}
	var top grantFields // Not asked for: a batch's errors are per item, or a status other than 200.
	next, ok := scanObject(body, skipSpace(body, 0), &top, &results)
	if !ok || !results.found || skipSpace(body, next) != len(body) {
		return results.items[:0], false
	}
	return results.items, true
}

// resultsScan collects the items of the "results" array of a batch answer.
type resultsScan struct {
	items    []grantFields
	itemsMax int
	found    bool // The last "results" member was an array of at most itemsMax objects.
}

// scanObject reads the object at b[i] into f and returns the index after
// it. When results is not nil, the object's "results" member goes there
// instead; the items of that array are read by scanObject too. One walk for
// both was kept because the alternatives measured slower on the single
// grant path, where this one costs what the walk before batches did: a
// walker calling back for each member, about 10 ns (4%) a response more,
// and a helper function for each step, 40 ns (13%).
func scanObject(b []byte, i int, f *grantFields, results *resultsScan) (next int, ok bool) {
	*f = grantFields{}
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, false
		}
		key, next, ok := scanString(b, i)
		if !ok {
			return 0, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return 0, false
		}
		var value []byte
		switch {
		case results != nil && string(key) == "results":
			next, ok = results.scan(b, i)
		case b[i] == '"':
			if value, next, ok = scanString(b, i); ok && value == nil {
				value = []byte{} // An empty string is present, unlike an absent member.
			}
		default:
			next, ok = skipValue(b, i)
		}
		if !ok {
			return 0, false
		}
		switch string(key) {
		case "status":
			f.status = value
		case "code":
			f.code = value
		case "token":
			f.token = value
		case "message":
			f.message = value
		}
		i = skipSpace(b, next)
		if i >= len(b) {
			return 0, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// scan reads the value at b[i] of a "results" member and returns the index
// after it. It replaces r.items with the value's items and sets r.found
// when the value is an array of at most r.itemsMax objects; it skips any
// other value, which a later "results" member may replace.
func (r *resultsScan) scan(b []byte, i int) (next int, ok bool) {
	r.items, r.found = r.items[:0], false
	if b[i] != '[' {
		return skipAny(b, i)
	}
	j := skipSpace(b, i+1)
	if j < len(b) && b[j] == ']' {
		r.found = true
		return j + 1, true
	}
	for len(r.items) < r.itemsMax {
		r.items = append(r.items, grantFields{})
		if j, ok = scanObject(b, j, &r.items[len(r.items)-1], nil); !ok {
			break // Not an object: skipAny finds whether it is JSON at all.
		}
		if j = skipSpace(b, j); j >= len(b) {
			return 0, false
		}
		if b[j] == ']' {
			r.found = true
			return j + 1, true
		}
		if b[j] != ',' {
			return 0, false
		}
		j = skipSpace(b, j+1)
	}
	r.items = r.items[:0]
	return skipAny(b, i)
}

// skipAny steps over the value at b[i], a string or not, and returns the
// index after it.
func skipAny(b []byte, i int) (next int, ok bool) {
	if b[i] == '"' {
		_, next, ok = scanString(b, i)
		return next, ok
	}
	return skipValue(b, i)
}

// plainASCII reports whether every byte of s is printable ASCII (0x20 to
// 0x7f) other than a backslash: a JSON string's contents that decode to
// themselves.
func plainASCII(s []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(s) >= 8 {
		w := binary.LittleEndian.Uint64(s)
		bs := w ^ ('\\' * ones) // a zero byte where s has a backslash
		// A high bit set: a byte of 0x80 or more, one below 0x20 (its
		// subtraction borrows), or a backslash; exact for "any" (a borrow
		// only starts at a byte that matches).
		if (w|((w-0x20*ones)&^w)|((bs-ones)&^bs))&highs != 0 {
			return false
		}
		s = s[8:]
	}
	for _, c := range s {
		if c < 0x20 || c >= 0x80 || c == '\\' {
			return false
		}
	}
	return true
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
	// The common case, a string of printable ASCII without escapes (every
	// key, status and token of an answer): its closing quote is the first
	// quote after it, found by bytes.IndexByte, and its bytes are checked
	// eight at a time. Reading a byte at a time and then checking UTF-8
	// was 29% of the bench's CPU in a burst of repeats.
	if end := bytes.IndexByte(b[start:], '"'); end >= 0 && plainASCII(b[start:start+end]) {
		return b[start : start+end], start + end + 1, true
	}
	return scanStringByByte(b, i)
}

// scanStringByByte is scanString without its fast path: a byte at a
// time, then a UTF-8 check, escapes decoded by encoding/json.
func scanStringByByte(b []byte, i int) (s []byte, next int, ok bool) {
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
