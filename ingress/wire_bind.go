package ingress

// The wire form of POST /v1/accounts/bind, under the rules of wire.go.

import (
	"strconv"
	"unicode/utf8"

	"redrain/adminauth"
	"redrain/errcode"
)

// BindRequest asks to bind the app user (AppID, UserID) to the unified
// account ActID, so that grants by any identity bound to it reach one
// account and count as one user.
type BindRequest struct {
	AppID  uint32 // Invariant: >= 1.
	UserID string // Invariant: as GrantRequest.UserID.
	ActID  uint64 // Invariant: >= 1.
	// Consent is the consent of an app the account holds, for a bind that
	// links another app's user to it (adminauth: bind consent); nil when
	// the request carries none.
	Consent *adminauth.Consent
}

// The fields of a bind object, in the order "missing field" reports them:
// the first bindFieldsRequired are required.
var bindFieldNames = []string{"app_id", "user_id", "act_id", "consent"}

const bindFieldsRequired = 3

// The fields of a consent object, all required.
var consentFieldNames = []string{"key", "expires", "signature"}

// ParseBindRequest parses {"app_id": 2, "user_id": "b-7", "act_id": 17},
// with an optional "consent": {"key": "1", "expires": 1798761600000,
// "signature": "9f86..."}.
//
// The first three fields are required, in any order, each once; app_id is an
// integer in 1..2^32-1, act_id in 1..2^64-1, user_id follows IDLenMax, all
// under the rules of ParseGrantRequest (plain integers, unknown and
// duplicate fields refused, nothing after the object). A consent has all
// three of its fields: key and signature strings under IDLenMax, expires
// a positive integer (unix milliseconds). Every error is an
// *errcode.Error: errcode.CodeTooLarge past BodyBytesMax, else errcode.CodeMalformed naming the
// field.
func ParseBindRequest(body []byte) (BindRequest, error) {
	var r BindRequest
	if len(body) > BodyBytesMax {
		return r, errTooLarge(len(body), BodyBytesMax)
	}
	s := scanner{buf: body}
	s.skipSpace()
	var text [IDLenMax + utf8.UTFMax]byte
	var user []byte
	err := s.object(bindFieldNames, bindFieldsRequired, func(f int) *errcode.Error {
		var err *errcode.Error
		var v uint64
		switch f {
		case 0:
			v, err = s.positiveInt(bindFieldNames[f], 1<<32-1)
			r.AppID = uint32(v)
		case 1:
			user, err = s.id(text[:0], bindFieldNames[f])
		case 2:
			r.ActID, err = s.positiveInt(bindFieldNames[f], 1<<64-1)
		default:
			r.Consent, err = s.consent()
		}
		return err
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return BindRequest{}, err
	}
	r.UserID = string(user)
	return r, nil
}

// consent parses a consent object at the cursor.
func (s *scanner) consent() (*adminauth.Consent, *errcode.Error) {
	var c adminauth.Consent
	var scratch [IDLenMax + utf8.UTFMax]byte
	err := s.object(consentFieldNames, len(consentFieldNames), func(f int) *errcode.Error {
		name := "consent." + consentFieldNames[f]
		switch f {
		case 0, 2:
			v, err := s.id(scratch[:0], name)
			if f == 0 {
				c.KeyID = string(v)
			} else {
				c.Signature = string(v)
			}
			return err
		default:
			v, err := s.positiveInt(name, 1<<63-1)
			c.Expires = int64(v)
			return err
		}
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// object parses one object at the cursor whose fields are names (the
// first required of them required, each at most once, in any order),
// calling value with the index of each field and the cursor on its value;
// value must leave the cursor after the value. The cursor ends after the
// '}'.
func (s *scanner) object(names []string, required int, value func(f int) *errcode.Error) *errcode.Error {
	if !s.consume('{') {
		return s.syntaxError("'{'")
	}
	s.skipSpace()
	var nameScratch [fieldNameBytesMax + utf8.UTFMax]byte
	var seen uint64 // Invariant: len(names) <= 64.
	for more := !s.consume('}'); more; {
		name, err := s.fieldName(nameScratch[:0])
		if err != nil {
			return err
		}
		f := -1
		for i, n := range names {
			if string(name) == n {
				f = i
			}
		}
		switch {
		case f < 0:
			return errcode.Errorf(errcode.CodeMalformed, "unknown field %q", string(name))
		case seen&(1<<f) != 0:
			return errcode.Errorf(errcode.CodeMalformed, "duplicate field %q", names[f])
		}
		seen |= 1 << f
		if err := value(f); err != nil {
			return err
		}
		if more, err = s.afterMember('}'); err != nil {
			return err
		}
	}
	for f, name := range names[:required] {
		if seen&(1<<f) == 0 {
			return errcode.Errorf(errcode.CodeMalformed, "missing field %q", name)
		}
	}
	return nil
}

// BindResponse is the answer to a bind. Status is BindStatusBound when this
// request made the binding, BindStatusSame when the app user was already
// bound to ActID (a repeated request, or the identity that made the
// account).
type BindResponse struct {
	AppID  uint32
	UserID string
	ActID  uint64
	Status string
}

// The statuses of a BindResponse.
const (
	BindStatusBound = "bound"
	BindStatusSame  = "already_bound_same"
)

// AppendBindResponse appends {"app_id":2,"user_id":"b-7","act_id":17,
// "status":"bound"} to dst.
func AppendBindResponse(dst []byte, r *BindResponse) []byte {
	dst = append(dst, `{"app_id":`...)
	dst = strconv.AppendUint(dst, uint64(r.AppID), 10)
	dst = append(dst, `,"user_id":`...)
	dst = errcode.AppendJSON(dst, r.UserID)
	dst = append(dst, `,"act_id":`...)
	dst = strconv.AppendUint(dst, r.ActID, 10)
	dst = append(dst, `,"status":`...)
	dst = errcode.AppendJSON(dst, r.Status)
	return append(dst, '}')
}
