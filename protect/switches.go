package protect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalid wraps every reason ParseSwitches or Validate refuses switches.
var ErrInvalid = errors.New("protect: invalid switches")

// Limits on switches, checked by Validate.
const (
	// closedMax bounds each list of closed rains or activities.
	closedMax = 10_000
	// idLenMax bounds an activity or scene id, as the grant API does.
	idLenMax = 64
	// shedPercentMax is all grant requests.
	shedPercentMax = 100
	// retryAfterSecondsMax bounds the Retry-After operators may ask for.
	retryAfterSecondsMax = 3600
	// rateMax bounds a rate (tokens a second) and a burst.
	rateMax = 1e9
	// switchesBytesMax bounds a switches document.
	switchesBytesMax = 1 << 20
)

// Switches are the operator's controls in force on every node. The zero
// value switches nothing off and limits nothing.
type Switches struct {
	// ClosedRains are rains switched off, each "activity/scene/rain" with
	// rain a decimal id, e.g. "demo/rain/1". Invariant (Validate): unique,
	// at most closedMax.
	ClosedRains []string `json:"closed_rains"`
	// ClosedActivities are activities whose every rain is switched off.
	ClosedActivities []string `json:"closed_activities"`
	// ShedPercent of grant requests are refused at once. Invariant: 0..100.
	ShedPercent int `json:"shed_percent"`
	// RetryAfterSeconds is what shed and switched-off answers tell clients
	// to wait; 0 means 1. Invariant: 0..3600.
	RetryAfterSeconds int `json:"retry_after_seconds"`
	// UserRate and UserBurst limit each user (app_id, user_id): tokens a
	// second and bucket size. 0 = unlimited. Invariant: rate 0 with burst
	// 0, or rate > 0 with burst >= 1.
	UserRate  float64 `json:"user_rate"`
	UserBurst float64 `json:"user_burst"`
	// ClientRate and ClientBurst limit each client app (app_id) likewise.
	ClientRate  float64 `json:"client_rate"`
	ClientBurst float64 `json:"client_burst"`
	// LinesOff are business lines (package lines) an operator switched
	// off: their notices are skipped and nothing is pulled from them, their
	// snapshots served stale. Invariant: unique ValidLineID ids, at most
	// closedMax; a line no node serves is allowed (switched off ahead of
	// its configuration).
	LinesOff []string `json:"lines_off"`
}

// ParseSwitches decodes a switches document strictly: one JSON object,
// no unknown, duplicate or null fields, nothing after it, and values that
// pass Validate. Absent fields keep their zero value. Every error wraps
// ErrInvalid and names the field.
func ParseSwitches(raw []byte) (*Switches, error) {
	if len(raw) > switchesBytesMax {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(raw), switchesBytesMax)
	}
	if err := checkMembers(raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var s Switches
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// switchFields are the JSON names of Switches' fields, matched exactly.
var switchFields = map[string]bool{"closed_rains": true, "closed_activities": true, "shed_percent": true,
	"retry_after_seconds": true, "user_rate": true, "user_burst": true, "client_rate": true, "client_burst": true, "lines_off": true}

// checkMembers walks the top-level object for what encoding/json lets
// through: a field given twice (it keeps the last), null values (it leaves
// the zero value, hiding a client's mistake) and data after the object.
func checkMembers(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("%w: want a JSON object", ErrInvalid)
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		name, _ := t.(string)
		if !switchFields[name] {
			// encoding/json would also match names in another case.
			return fmt.Errorf("%w: unknown field %q", ErrInvalid, name)
		}
		if seen[name] {
			return fmt.Errorf("%w: duplicate field %q", ErrInvalid, name)
		}
		seen[name] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%w: field %q: %v", ErrInvalid, name, err)
		}
		if string(v) == "null" {
			return fmt.Errorf("%w: field %q: null", ErrInvalid, name)
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the object", ErrInvalid)
	}
	return nil
}

// Validate checks every invariant of s; the error wraps ErrInvalid and
// names the first field at fault.
func (s *Switches) Validate() error {
	if err := checkList("closed_rains", s.ClosedRains, checkRain); err != nil {
		return err
	}
	if err := checkList("closed_activities", s.ClosedActivities, func(a string) error { return checkID(a, false) }); err != nil {
		return err
	}
	if s.ShedPercent < 0 || s.ShedPercent > shedPercentMax {
		return fmt.Errorf("%w: shed_percent %d: want 0 to %d", ErrInvalid, s.ShedPercent, shedPercentMax)
	}
	if s.RetryAfterSeconds < 0 || s.RetryAfterSeconds > retryAfterSecondsMax {
		return fmt.Errorf("%w: retry_after_seconds %d: want 0 to %d", ErrInvalid, s.RetryAfterSeconds, retryAfterSecondsMax)
	}
	if err := checkRate("user", s.UserRate, s.UserBurst); err != nil {
		return err
	}
	if err := checkRate("client", s.ClientRate, s.ClientBurst); err != nil {
		return err
	}
	return checkList("lines_off", s.LinesOff, checkLineID)
}

// LineIDLenMax bounds a business line's id (package lines).
const LineIDLenMax = 32

// ValidLineID reports whether id may name a business line: 1..LineIDLenMax
// bytes of a-z, 0-9, '.' and '-' (no '/': it separates a snapshot key's
// parts). Package lines validates its configuration with it, so that a
// switch and a line agree on what an id is.
func ValidLineID(id string) bool {
	if len(id) == 0 || len(id) > LineIDLenMax {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func checkLineID(v string) error {
	if !ValidLineID(v) {
		return fmt.Errorf("want a line id of 1 to %d bytes of a-z, 0-9, '.' and '-'", LineIDLenMax)
	}
	return nil
}

func checkList(field string, list []string, check func(string) error) error {
	if len(list) > closedMax {
		return fmt.Errorf("%w: %s: %d entries, more than %d", ErrInvalid, field, len(list), closedMax)
	}
	seen := make(map[string]bool, len(list))
	for i, v := range list {
		if err := check(v); err != nil {
			return fmt.Errorf("%w: %s[%d] %q: %v", ErrInvalid, field, i, v, err)
		}
		if seen[v] {
			return fmt.Errorf("%w: %s[%d] %q: listed twice", ErrInvalid, field, i, v)
		}
		seen[v] = true
	}
	return nil
}

// checkRain accepts "activity/scene/rain" with a canonical decimal rain id,
// the form RainOpen looks up.
func checkRain(v string) error {
	parts := strings.Split(v, "/")
	if len(parts) != 3 {
		return errors.New(`want "activity/scene/rain"`)
	}
	for _, p := range parts[:2] {
		if err := checkID(p, true); err != nil {
			return err
		}
	}
	id, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 10) != parts[2] {
		return errors.New("rain: want a positive integer without sign or leading zeros")
	}
	return nil
}

// checkID accepts what the grant API accepts as an id: 1..idLenMax bytes
// of UTF-8 without control characters ('/' separates a rain's parts).
func checkID(v string, part bool) error {
	if len(v) == 0 || len(v) > idLenMax {
		return fmt.Errorf("want an id of 1 to %d bytes", idLenMax)
	}
	if !utf8.ValidString(v) {
		return errors.New("invalid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return fmt.Errorf("control character %U", r)
		}
		if part && r == '/' {
			return errors.New(`"/" inside an id`)
		}
	}
	return nil
}

func checkRate(scope string, rate, burst float64) error {
	switch {
	case math.IsNaN(rate) || rate < 0 || rate > rateMax:
		return fmt.Errorf("%w: %s_rate %g: want 0 (unlimited) to %g", ErrInvalid, scope, rate, rateMax)
	case rate == 0 && burst != 0:
		return fmt.Errorf("%w: %s_burst %g with %s_rate 0 (unlimited): want 0", ErrInvalid, scope, burst, scope)
	case rate > 0 && (math.IsNaN(burst) || burst < 1 || burst > rateMax):
		return fmt.Errorf("%w: %s_burst %g: want 1 to %g with a %s_rate", ErrInvalid, scope, burst, rateMax, scope)
	}
	return nil
}

// RainKey is how ClosedRains names a rain.
func RainKey(activity, scene string, rain uint64) string {
	return string(appendRainKey(nil, activity, scene, rain))
}

func appendRainKey(dst []byte, activity, scene string, rain uint64) []byte {
	dst = append(dst, activity...)
	dst = append(dst, '/')
	dst = append(dst, scene...)
	dst = append(dst, '/')
	return strconv.AppendUint(dst, rain, 10)
}
