package ingress

// POST /v1/sync/notify: a business line says a user's assets changed. The
// notice is queued on the sync topic (package lines) and answered 202 once
// Kafka acknowledged it; the pull from the line comes later, on whichever
// node consumes it.

import (
	"errors"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"redrain/errcode"
	"redrain/lines"
)

// The fields of a notice, all required.
var syncFieldNames = []string{"line", "app_id", "user_id"}

// ParseSyncNotice parses {"line": "games", "app_id": 1, "user_id": "u-7"}:
// every field required, each once, in any order; line and user_id are IDs
// (IDLenMax), app_id an integer in 1..2^32-1, under the rules of
// ParseGrantRequest. Every error is an *errcode.Error: errcode.CodeTooLarge
// past BodyBytesMax, else errcode.CodeMalformed naming the field.
func ParseSyncNotice(body []byte) (lines.Notice, error) {
	if len(body) > BodyBytesMax {
		return lines.Notice{}, errTooLarge(len(body), BodyBytesMax)
	}
	s := scanner{buf: body}
	s.skipSpace()
	var line, user [IDLenMax + utf8.UTFMax]byte
	var lineID, userID []byte
	var app uint64
	err := s.object(syncFieldNames, len(syncFieldNames), func(f int) *errcode.Error {
		var err *errcode.Error
		switch f {
		case 0:
			lineID, err = s.id(line[:0], syncFieldNames[f])
		case 1:
			app, err = s.positiveInt(syncFieldNames[f], 1<<32-1)
		default:
			userID, err = s.id(user[:0], syncFieldNames[f])
		}
		return err
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return lines.Notice{}, err
	}
	return lines.Notice{Line: string(lineID), App: uint32(app), User: string(userID)}, nil
}

// syncNotify serves POST /v1/sync/notify. With app keys, the notice's
// app_id is the signer's (403 otherwise). A line this node does not
// configure is 404 unknown_line; nothing is queued for a refused notice.
func (s *Server) syncNotify(ctx *fasthttp.RequestCtx) {
	app, ok := s.appOf(ctx)
	if !ok {
		return
	}
	n, err := ParseSyncNotice(ctx.PostBody())
	if err != nil {
		writeError(ctx, err)
		return
	}
	if app != 0 && n.App != app {
		writeError(ctx, errOtherApp(app, n.App))
		return
	}
	if s.Sync == nil {
		writeError(ctx, errcode.Errorf(errcode.CodeUnknownLine, "line %q: this node configures no business lines", n.Line))
		return
	}
	switch err := s.Sync.Notify(n); {
	case errors.Is(err, lines.ErrUnknownLine):
		writeError(ctx, errcode.Errorf(errcode.CodeUnknownLine, "%v", err))
	case errors.Is(err, lines.ErrNotice):
		writeError(ctx, errcode.Errorf(errcode.CodeMalformed, "%v", err))
	case err != nil:
		writeError(ctx, unavailable(err))
	default:
		writeJSON(ctx, fasthttp.StatusAccepted, []byte(`{"status":"queued"}`))
	}
}
