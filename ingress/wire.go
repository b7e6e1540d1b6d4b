// Package ingress is redrain's HTTP API: it parses requests (strictly, by
// hand, and fuzzed), maps every client-visible failure to a stable code in
// one table, and runs the grant path, token status and redeem, and the
// wallet on top of the campaign, tokens and storage packages. It must never
// write to TiKV on the grant path, nor make an unpipelined Redis call per
// grant.
package ingress

// This file is the wire layer: request bodies in, response bodies out, over
// plain []byte, with no HTTP library. encoding/json cost 2.9x the rest of the
// grant path when measured, so requests are read by a small strict scanner
// that uses no reflection and allocates nothing beyond the strings it
// returns, and responses are appended field by field.

import (
	"redrain/errcode"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits on request bodies. Each one is checked and fails with an *errcode.Error,
// never by truncating.
const (
	// BodyBytesMax bounds a request body; a larger one fails with
	// errcode.CodeTooLarge before any byte of it is read.
	BodyBytesMax = 64 << 10
	// ListBodyBytesMax bounds the body of a batch grant or token request:
	// GrantsPerBatchMax grants or TokensPerRequestMax tokens of the longest
	// kind fit in it.
	ListBodyBytesMax = 1 << 20
	// IDLenMax bounds user_id, activity_id and scene_id, in bytes after
	// JSON unescaping. An ID is 1..IDLenMax bytes of valid UTF-8 without
	// control characters (C0, DEL or C1).
	IDLenMax = 64
	// TokensPerRequestMax bounds the "tokens" array of a token request.
	TokensPerRequestMax = 1000
	// GrantsPerBatchMax bounds the "grants" array of a batch grant request.
	GrantsPerBatchMax = 1000
	// TokenBytesMax bounds one token string, in bytes after unescaping.
	TokenBytesMax = 512
)

// GrantRequest is one grant as a client asks for it: the user (AppID,
// UserID) wants the award of rain RainID in the activity's scene.
type GrantRequest struct {
	AppID      uint32 // Invariant: >= 1.
	UserID     string // Invariant: 1..IDLenMax bytes, valid UTF-8, no control characters.
	ActivityID string // Invariant: as UserID.
	SceneID    string // Invariant: as UserID.
	RainID     uint64 // Invariant: >= 1.
}

// ParseGrantRequest parses {"app_id": 1, "user_id": "u-42", "activity_id":
// "demo", "scene_id": "rain", "rain_id": 1}.
//
// All five fields are required, in any order, each once. app_id is an
// integer in 1..2^32-1 and rain_id in 1..2^64-1, written as a plain JSON
// integer (no fraction, exponent, sign, leading zeros or quotes). The three
// IDs follow IDLenMax. Unknown fields (names match exactly, case included),
// duplicate fields and anything but whitespace after the object are errors.
// Strings may use every JSON escape, including \uXXXX surrogate pairs;
// invalid escapes, lone surrogates, raw control characters and invalid UTF-8
// are errors.
//
// Every error is an *errcode.Error: errcode.CodeTooLarge if len(body) > BodyBytesMax, else
// errcode.CodeMalformed with a message naming the field and the problem, such as
// `field "rain_id": want a positive integer`. On success the only allocation
// is one string that the three IDs share.
func ParseGrantRequest(body []byte) (GrantRequest, error) {
	if len(body) > BodyBytesMax {
		return GrantRequest{}, errTooLarge(len(body), BodyBytesMax)
	}
	s := scanner{buf: body}
	s.skipSpace()
	g, err := s.grant()
	if err != nil {
		return GrantRequest{}, err
	}
	if err := s.end(); err != nil {
		return GrantRequest{}, err
	}
	return g, nil
}

// ParseGrantBatch parses {"grants": [<grant object>, ...]} with
// 1..GrantsPerBatchMax items, each under the rules of ParseGrantRequest; the
// message of an item's error starts with its index, as in
// `grants[3]: field "user_id": must not be empty`. Each item's IDs share one
// string of their own, so keeping one request's UserID does not keep the
// whole batch alive.
func ParseGrantBatch(body []byte) ([]GrantRequest, error) {
	gs, err := appendGrantBatch(nil, body)
	if err != nil {
		return nil, err
	}
	return gs, nil
}

// appendGrantBatch is ParseGrantBatch appending to gs, so that a caller can
// reuse one slice from request to request; on error gs holds what was
// parsed before it.
func appendGrantBatch(gs []GrantRequest, body []byte) ([]GrantRequest, error) {
	if len(body) > ListBodyBytesMax {
		return gs, errTooLarge(len(body), ListBodyBytesMax)
	}
	s := scanner{buf: body}
	err := s.list("grants", GrantsPerBatchMax, func(i int) *errcode.Error {
		g, err := s.grant()
		if err != nil {
			return errcode.Errorf(err.Code, "grants[%d]: %s", i, err.Message)
		}
		gs = append(gs, g)
		return nil
	})
	if err != nil {
		return gs, err
	}
	return gs, nil
}

// ParseTokens parses {"tokens": ["...", ...]} with 1..TokensPerRequestMax
// strings of at most TokenBytesMax bytes each (after unescaping), under the
// string rules of ParseGrantRequest.
//
// The returned tokens are copies, not views of body (fasthttp reuses the
// body's buffer once the handler returns); they share one backing array,
// each capped so that appending to one cannot overwrite the next. An empty
// or garbled token is not a parse error: it is left to the token layer to
// answer as invalid, so that one bad token does not fail the others.
func ParseTokens(body []byte) ([][]byte, error) {
	if len(body) > ListBodyBytesMax {
		return nil, errTooLarge(len(body), ListBodyBytesMax)
	}
	s := scanner{buf: body}
	var toks [][]byte
	// Unescaped text is never longer than its JSON form, so one array the
	// size of body holds every token and append never moves it.
	arena := make([]byte, 0, len(body))
	err := s.list("tokens", TokensPerRequestMax, func(i int) *errcode.Error {
		if s.peek() != '"' {
			return errcode.Errorf(errcode.CodeMalformed, "tokens[%d]: want a string", i)
		}
		start := len(arena)
		var problem string
		arena, _, problem = s.appendString(arena, TokenBytesMax)
		if problem != "" {
			return errcode.Errorf(errcode.CodeMalformed, "tokens[%d]: %s", i, s.describe(problem, TokenBytesMax))
		}
		toks = append(toks, arena[start:len(arena):len(arena)])
		return nil
	})
	if err != nil {
		return nil, err
	}
	return toks, nil
}

func errTooLarge(n, limit int) *errcode.Error {
	return errcode.Errorf(errcode.CodeTooLarge, "body is %d bytes, more than the %d allowed", n, limit)
}

// The fields of a grant object, in the order "missing field" reports them.
const (
	grantFieldAppID = iota
	grantFieldUserID
	grantFieldActivityID
	grantFieldSceneID
	grantFieldRainID
	grantFieldCount
)

var grantFieldNames = [grantFieldCount]string{"app_id", "user_id", "activity_id", "scene_id", "rain_id"}

// fieldNameBytesMax bounds how much of a field name is decoded. Every known
// name is shorter, so a longer one is unknown whatever follows, and the
// error message quotes no more than this.
const fieldNameBytesMax = 32

// Problems found inside a JSON string, reported with their offset.
const (
	problemUnterminated = "unterminated string"
	problemControl      = "raw control character in string"
	problemEscape       = "invalid escape in string"
	problemSurrogate    = "unpaired UTF-16 surrogate in \\u escape"
	problemUTF8         = "invalid UTF-8 in string"
	problemTooLong      = "too long" // Reported with the limit, not the offset.
)

// scanner reads one JSON body front to back. It knows only the shapes this
// API accepts, so it never has to skip an unknown value: the first byte that
// does not fit ends the parse with an error.
type scanner struct {
	buf []byte
	pos int // Invariant: 0 <= pos <= len(buf).
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.buf) {
		switch s.buf[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the byte at the cursor, or 0 at the end of the body. A raw 0
// byte is never valid between JSON tokens, so callers may treat both alike.
func (s *scanner) peek() byte {
	if s.pos < len(s.buf) {
		return s.buf[s.pos]
	}
	return 0
}

// consume advances past c if it is the byte at the cursor.
func (s *scanner) consume(c byte) bool {
	if s.pos < len(s.buf) && s.buf[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// syntaxError reports that the byte at the cursor is not what the grammar
// wants there.
func (s *scanner) syntaxError(want string) *errcode.Error {
	if s.pos >= len(s.buf) {
		if len(s.buf) == 0 || s.isBlank() {
			return errcode.Errorf(errcode.CodeMalformed, "empty body, want a JSON object")
		}
		return errcode.Errorf(errcode.CodeMalformed, "unexpected end of body, want %s", want)
	}
	c := s.buf[s.pos]
	var found string
	if c >= 0x20 && c < 0x7f {
		found = strconv.QuoteRune(rune(c))
	} else {
		found = "byte 0x" + strconv.FormatUint(uint64(c), 16)
	}
	return errcode.Errorf(errcode.CodeMalformed, "invalid JSON at offset %d: want %s, found %s", s.pos, want, found)
}

func (s *scanner) isBlank() bool {
	for _, c := range s.buf {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// describe turns a problem found by appendString into message text.
func (s *scanner) describe(problem string, limit int) string {
	if problem == problemTooLong {
		return "longer than " + strconv.Itoa(limit) + " bytes"
	}
	return problem + " at offset " + strconv.Itoa(s.pos)
}

// end checks that only whitespace follows the value just parsed.
func (s *scanner) end() *errcode.Error {
	s.skipSpace()
	if s.pos != len(s.buf) {
		return errcode.Errorf(errcode.CodeMalformed, "invalid JSON at offset %d: data after the top-level object", s.pos)
	}
	return nil
}

// fieldName reads a quoted field name, the ':' after it and the whitespace
// around it, leaving the cursor on the value. The name is decoded into
// scratch; a name too long to be known is reported here as unknown.
func (s *scanner) fieldName(scratch []byte) ([]byte, *errcode.Error) {
	if s.peek() != '"' {
		return nil, s.syntaxError("a field name in double quotes")
	}
	name, _, problem := s.appendString(scratch[:0], fieldNameBytesMax)
	switch problem {
	case "":
	case problemTooLong:
		return nil, errcode.Errorf(errcode.CodeMalformed, "unknown field %q...", string(name))
	default:
		return nil, errcode.Errorf(errcode.CodeMalformed, "field name: %s", s.describe(problem, 0))
	}
	s.skipSpace()
	if !s.consume(':') {
		return nil, s.syntaxError("':'")
	}
	s.skipSpace()
	return name, nil
}

// afterMember consumes the ',' or closing byte after an object member or
// array item and the whitespace around it. It reports whether another
// member follows.
func (s *scanner) afterMember(closing byte) (more bool, err *errcode.Error) {
	s.skipSpace()
	switch {
	case s.consume(','):
		s.skipSpace()
		return true, nil
	case s.consume(closing):
		return false, nil
	}
	return false, s.syntaxError("',' or " + strconv.QuoteRune(rune(closing)))
}

// grant parses one grant object at the cursor and leaves the cursor after
// its '}'.
func (s *scanner) grant() (GrantRequest, *errcode.Error) {
	var g GrantRequest
	if !s.consume('{') {
		return g, s.syntaxError("'{'")
	}
	s.skipSpace()
	// The three IDs are unescaped into one buffer and become one string:
	// one allocation per request instead of three. The slack lets the last
	// ID overshoot its limit by one rune before appendString notices.
	var text [3*IDLenMax + utf8.UTFMax]byte
	var spans [grantFieldCount][2]int // Start and end in text of each ID.
	var nameScratch [fieldNameBytesMax + utf8.UTFMax]byte
	n := text[:0]
	var seen uint8
	if s.peek() != '}' {
		for {
			name, err := s.fieldName(nameScratch[:0])
			if err != nil {
				return g, err
			}
			var f int
			switch string(name) { // Keep in step with grantFieldNames.
			case "app_id":
				f = grantFieldAppID
			case "user_id":
				f = grantFieldUserID
			case "activity_id":
				f = grantFieldActivityID
			case "scene_id":
				f = grantFieldSceneID
			case "rain_id":
				f = grantFieldRainID
			default:
				return g, errcode.Errorf(errcode.CodeMalformed, "unknown field %q", string(name))
			}
			if seen&(1<<f) != 0 {
				return g, errcode.Errorf(errcode.CodeMalformed, "duplicate field %q", grantFieldNames[f])
			}
			seen |= 1 << f
			switch f {
			case grantFieldAppID:
				v, err := s.positiveInt(grantFieldNames[f], 1<<32-1)
				if err != nil {
					return g, err
				}
				g.AppID = uint32(v)
			case grantFieldRainID:
				v, err := s.positiveInt(grantFieldNames[f], 1<<64-1)
				if err != nil {
					return g, err
				}
				g.RainID = v
			default:
				var err *errcode.Error
				spans[f][0] = len(n)
				if n, err = s.id(n, grantFieldNames[f]); err != nil {
					return g, err
				}
				spans[f][1] = len(n)
			}
			more, err := s.afterMember('}')
			if err != nil {
				return g, err
			}
			if !more {
				break
			}
		}
	} else {
		s.pos++
	}
	if seen != 1<<grantFieldCount-1 {
		for f, name := range grantFieldNames {
			if seen&(1<<f) == 0 {
				return g, errcode.Errorf(errcode.CodeMalformed, "missing field %q", name)
			}
		}
	}
	// The IDs were appended in body order; spans says where each one went.
	all := string(n)
	g.UserID = all[spans[grantFieldUserID][0]:spans[grantFieldUserID][1]]
	g.ActivityID = all[spans[grantFieldActivityID][0]:spans[grantFieldActivityID][1]]
	g.SceneID = all[spans[grantFieldSceneID][0]:spans[grantFieldSceneID][1]]
	return g, nil
}

// id reads a quoted ID (see IDLenMax) for field name and appends it,
// unescaped, to dst.
func (s *scanner) id(dst []byte, name string) ([]byte, *errcode.Error) {
	if s.peek() != '"' {
		return dst, errcode.Errorf(errcode.CodeMalformed, "field %q: want a string", name)
	}
	start := len(dst)
	dst, printable, problem := s.appendString(dst, IDLenMax)
	if problem != "" {
		return dst, errcode.Errorf(errcode.CodeMalformed, "field %q: %s", name, s.describe(problem, IDLenMax))
	}
	v := dst[start:]
	if len(v) == 0 {
		return dst, errcode.Errorf(errcode.CodeMalformed, "field %q: must not be empty", name)
	}
	if printable {
		return dst, nil
	}
	// appendString guarantees valid UTF-8; what is left is to keep control
	// characters, raw or escaped, out of IDs that end up in keys and logs.
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return dst, errcode.Errorf(errcode.CodeMalformed, "field %q: contains control character %U", name, rune(c))
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(v[i:])
		if r >= 0x80 && r < 0xa0 {
			return dst, errcode.Errorf(errcode.CodeMalformed, "field %q: contains control character %U", name, r)
		}
		i += size
	}
	return dst, nil
}

// positiveInt reads a plain JSON integer in 1..limit for field name.
func (s *scanner) positiveInt(name string, limit uint64) (uint64, *errcode.Error) {
	buf := s.buf
	i := s.pos
	if i >= len(buf) || buf[i] < '1' || buf[i] > '9' {
		// Covers 0, leading zeros, signs, quotes, null and every other type.
		return 0, errcode.Errorf(errcode.CodeMalformed, "field %q: want a positive integer", name)
	}
	var v uint64
	for ; i < len(buf) && buf[i] >= '0' && buf[i] <= '9'; i++ {
		d := uint64(buf[i] - '0')
		if v > (limit-d)/10 {
			return 0, errcode.Errorf(errcode.CodeMalformed, "field %q: want a positive integer at most %d", name, limit)
		}
		v = v*10 + d
	}
	if i < len(buf) {
		switch buf[i] {
		case ' ', '\t', '\n', '\r', ',', '}', ']':
		default:
			// A fraction, an exponent or junk glued to the digits.
			return 0, errcode.Errorf(errcode.CodeMalformed, "field %q: want a positive integer", name)
		}
	}
	s.pos = i
	return v, nil
}

// list parses the whole body {"<name>": [item, ...]} with 1..itemsMax items.
// item is called with the cursor on each item's first byte and must leave it
// after the item.
func (s *scanner) list(name string, itemsMax int, item func(i int) *errcode.Error) *errcode.Error {
	s.skipSpace()
	if !s.consume('{') {
		return s.syntaxError("'{'")
	}
	s.skipSpace()
	if s.consume('}') {
		return errcode.Errorf(errcode.CodeMalformed, "missing field %q", name)
	}
	var nameScratch [fieldNameBytesMax + utf8.UTFMax]byte
	seen := false
	for {
		key, err := s.fieldName(nameScratch[:0])
		if err != nil {
			return err
		}
		if string(key) != name {
			return errcode.Errorf(errcode.CodeMalformed, "unknown field %q", string(key))
		}
		if seen {
			return errcode.Errorf(errcode.CodeMalformed, "duplicate field %q", name)
		}
		seen = true
		if !s.consume('[') {
			return errcode.Errorf(errcode.CodeMalformed, "field %q: want an array", name)
		}
		s.skipSpace()
		if s.consume(']') {
			return errcode.Errorf(errcode.CodeMalformed, "field %q: want 1 to %d items, got none", name, itemsMax)
		}
		for i := 0; ; i++ {
			if i == itemsMax {
				return errcode.Errorf(errcode.CodeMalformed, "field %q: more than %d items", name, itemsMax)
			}
			if err := item(i); err != nil {
				return err
			}
			more, err := s.afterMember(']')
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
		more, err := s.afterMember('}')
		if err != nil {
			return err
		}
		if !more {
			return s.end()
		}
	}
}

// printableASCII holds the bytes a JSON string may hold raw that decode
// to themselves and are printable: U+0020..U+007E but '"' and '\\'.
var printableASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString reads the JSON string at the cursor (which is on its opening
// quote), appends its unescaped text to dst and leaves the cursor after the
// closing quote. printable reports that the text was written with printable
// ASCII alone (no escapes, no DEL, nothing above U+007F), which spares IDs
// a second look. If the text would grow past limit bytes appendString stops
// with problemTooLong; any other problem leaves the cursor on the offending
// byte.
func (s *scanner) appendString(dst []byte, limit int) (_ []byte, printable bool, problem string) {
	buf := s.buf
	start := len(dst)
	i := s.pos + 1
	printable = true
	for {
		// Copy the run of bytes that need no work in one append.
		run := i
		for i < len(buf) && printableASCII[buf[i]] {
			i++
		}
		if len(dst)-start+i-run > limit {
			s.pos = i
			// Keep what fits, so that a message can quote the beginning.
			return append(dst, buf[run:run+max(0, limit-(len(dst)-start))]...), false, problemTooLong
		}
		dst = append(dst, buf[run:i]...)
		if i >= len(buf) {
			s.pos = i
			return dst, false, problemUnterminated
		}
		switch c := buf[i]; {
		case c == '"':
			s.pos = i + 1
			return dst, printable, ""
		case c == '\\':
			if dst, i, problem = appendEscape(dst, buf, i); problem != "" {
				s.pos = i
				return dst, false, problem
			}
		case c < 0x20:
			s.pos = i
			return dst, false, problemControl
		default: // DEL or the first byte of a multi-byte character.
			r, size := utf8.DecodeRune(buf[i:])
			if r == utf8.RuneError && size <= 1 {
				s.pos = i
				return dst, false, problemUTF8
			}
			dst = append(dst, buf[i:i+size]...)
			i += size
		}
		printable = false
		if len(dst)-start > limit {
			s.pos = i
			return dst, false, problemTooLong
		}
	}
}

// appendEscape decodes the escape sequence at buf[i] (a backslash) onto dst
// and returns the offset after it, or the offset of the problem.
func appendEscape(dst, buf []byte, i int) ([]byte, int, string) {
	if i+1 >= len(buf) {
		return dst, i, problemUnterminated
	}
	switch buf[i+1] {
	case '"', '\\', '/':
		return append(dst, buf[i+1]), i + 2, ""
	case 'b':
		return append(dst, '\b'), i + 2, ""
	case 'f':
		return append(dst, '\f'), i + 2, ""
	case 'n':
		return append(dst, '\n'), i + 2, ""
	case 'r':
		return append(dst, '\r'), i + 2, ""
	case 't':
		return append(dst, '\t'), i + 2, ""
	case 'u':
		r, ok := hex4(buf, i+2)
		if !ok {
			return dst, i, problemEscape
		}
		if utf16.IsSurrogate(r) {
			// Only a high surrogate followed by an escaped low one is a
			// character; encoding/json would turn a lone one into U+FFFD,
			// but a client that sends one has a bug worth hearing about.
			if r >= 0xdc00 {
				return dst, i, problemSurrogate
			}
			if i+7 >= len(buf) || buf[i+6] != '\\' || buf[i+7] != 'u' {
				return dst, i, problemSurrogate
			}
			lo, ok := hex4(buf, i+8)
			if !ok {
				return dst, i + 6, problemEscape
			}
			if lo < 0xdc00 || lo > 0xdfff {
				return dst, i, problemSurrogate
			}
			return utf8.AppendRune(dst, utf16.DecodeRune(r, lo)), i + 12, ""
		}
		return utf8.AppendRune(dst, r), i + 6, ""
	}
	return dst, i, problemEscape
}

// hex4 decodes the four hex digits at buf[i:i+4].
func hex4(buf []byte, i int) (rune, bool) {
	if i+4 > len(buf) {
		return 0, false
	}
	var r rune
	for _, c := range buf[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// GrantResponse is the answer to one grant. Token is the sealed token's text
// form, as the tokens package prints it.
type GrantResponse struct {
	Token      []byte
	OutTradeNo string
	ActID      uint64
	AwardType  string
	Asset      string // what the amount counts: "cash" (fen), "coin:{currency}", "item:{template}"
	Amount     int64  // Minor units (fen) or a count, per Asset.
	Stage      string // the child activity: internal, gray or formal
	Status     string // issued, booked, or no_award (every fallback exhausted)
}

// AppendGrantResponse appends {"token":"...","out_trade_no":"...",
// "act_id":42,"award_type":"cash","asset":"cash","amount":88,
// "stage":"formal","status":"issued"} to dst.
func AppendGrantResponse(dst []byte, r *GrantResponse) []byte {
	dst = append(dst, `{"token":`...)
	dst = errcode.AppendJSON(dst, r.Token)
	dst = append(dst, `,"out_trade_no":`...)
	dst = errcode.AppendJSON(dst, r.OutTradeNo)
	return appendGrantResponseTail(dst, r)
}

// appendGrantResponseTail appends the fields of r after out_trade_no and
// closes the object.
func appendGrantResponseTail(dst []byte, r *GrantResponse) []byte {
	dst = append(dst, `,"act_id":`...)
	dst = strconv.AppendUint(dst, r.ActID, 10)
	dst = append(dst, `,"award_type":`...)
	dst = errcode.AppendJSON(dst, r.AwardType)
	dst = append(dst, `,"asset":`...)
	dst = errcode.AppendJSON(dst, r.Asset)
	dst = append(dst, `,"amount":`...)
	dst = strconv.AppendInt(dst, r.Amount, 10)
	dst = append(dst, `,"stage":`...)
	dst = errcode.AppendJSON(dst, r.Stage)
	dst = append(dst, `,"status":`...)
	dst = errcode.AppendJSON(dst, r.Status)
	return append(dst, '}')
}

// TokenResult is the status of one token in a token status or redeem
// answer. Error is used only with Status "invalid", where it says why.
type TokenResult struct {
	OutTradeNo string
	Status     string
	ActID      uint64
	AwardType  string
	Amount     int64
	Error      string
}

// tokenStatusInvalid is the status of a token that failed to open; its
// result carries no award.
const tokenStatusInvalid = "invalid"

// AppendTokenResults appends {"results":[{"out_trade_no":"...",
// "status":"booked","act_id":1,"award_type":"cash","amount":88}, ...]} to
// dst, one object per result in order. A result with Status "invalid" is
// written as {"out_trade_no":"","status":"invalid","error":"..."} (its
// OutTradeNo is empty when the token was too damaged to tell).
func AppendTokenResults(dst []byte, rs []TokenResult) []byte {
	dst = append(dst, `{"results":[`...)
	for i := range rs {
		r := &rs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"out_trade_no":`...)
		dst = errcode.AppendJSON(dst, r.OutTradeNo)
		dst = append(dst, `,"status":`...)
		dst = errcode.AppendJSON(dst, r.Status)
		if r.Status == tokenStatusInvalid {
			dst = append(dst, `,"error":`...)
			dst = errcode.AppendJSON(dst, r.Error)
		} else {
			dst = append(dst, `,"act_id":`...)
			dst = strconv.AppendUint(dst, r.ActID, 10)
			dst = append(dst, `,"award_type":`...)
			dst = errcode.AppendJSON(dst, r.AwardType)
			dst = append(dst, `,"amount":`...)
			dst = strconv.AppendInt(dst, r.Amount, 10)
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
