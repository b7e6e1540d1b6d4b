package dashboard

import (
	"context"
	_ "embed"
	"encoding/json"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
	"redrain/errcode"
	"redrain/ingress"
)

// page is the whole dashboard: HTML, CSS and script in one file, drawn
// in the browser from the frames (no build step, nothing fetched from
// elsewhere).
//
//go:embed page.html
var page []byte

// TicketScope is what a dashboard ticket opens (adminauth.Ticket).
const TicketScope = "dashboard"

// keepAliveEvery: a comment line on an idle stream, so proxies keep it.
const keepAliveEvery = 15 * time.Second

// Handler serves the dashboard's routes, each only with a valid ticket
// (?ticket=, made by `redrain admin dashboard` with an admin key):
//
//	GET /dashboard              the page
//	GET /dashboard/events       frames as server-sent events, one a second
//	GET /dashboard/frame        one frame, JSON
func Handler(hub *Hub, tickets *adminauth.Verifier) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !ctx.IsGet() {
			errcode.MethodNotAllowed(ctx, "GET")
			return
		}
		if tickets == nil {
			errcode.Write(ctx, errcode.Errorf(errcode.CodeUnauthorized, "dashboard disabled: no admin keys"))
			return
		}
		if _, err := tickets.VerifyTicket(TicketScope, string(ctx.QueryArgs().Peek("ticket"))); err != nil {
			errcode.Write(ctx, ingress.AuthFailure(err))
			return
		}
		ctx.Response.Header.Set("Cache-Control", "no-store")
		ctx.Response.Header.Set("Referrer-Policy", "no-referrer") // the ticket is in the URL
		switch string(ctx.Path()) {
		case "/dashboard", "/dashboard/":
			ctx.Response.Header.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:")
			ctx.SetContentType("text/html; charset=utf-8")
			ctx.SetBody(page)
		case "/dashboard/frame":
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := json.Marshal(hub.Frame(c))
			if err != nil {
				errcode.Write(ctx, errcode.Errorf(errcode.CodeInternal, "frame: %v", err))
				return
			}
			errcode.WriteJSON(ctx, fasthttp.StatusOK, b)
		case "/dashboard/events":
			ctx.SetContentType("text/event-stream")
			ctx.Response.Header.Set("X-Accel-Buffering", "no")
			ingress.SetStream(ctx, func(w io.Writer, flush func() error, stop <-chan struct{}) { stream(hub, w, flush, stop) })
		default:
			errcode.Write(ctx, errcode.Errorf(errcode.CodeNotFound, "no route GET %s", ctx.Path()))
		}
	}
}

// stream writes every frame the hub builds as an event until the client
// goes or the server stops.
func stream(hub *Hub, w io.Writer, flush func() error, stop <-chan struct{}) {
	frames, leave := hub.Subscribe()
	defer leave()
	if _, err := io.WriteString(w, "retry: 2000\n\n"); err != nil || flush() != nil {
		return
	}
	idle := time.NewTimer(keepAliveEvery)
	defer idle.Stop()
	for {
		var err error
		select {
		case <-stop:
			return
		case b := <-frames:
			_, err = w.Write(append(append([]byte("event: frame\ndata: "), b...), "\n\n"...))
		case <-idle.C:
			_, err = io.WriteString(w, ": keep-alive\n\n")
		}
		if err != nil || flush() != nil {
			return
		}
		idle.Reset(keepAliveEvery)
	}
}
