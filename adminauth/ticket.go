package adminauth

import (
	"crypto/hmac"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// A ticket lets a browser, which cannot sign each request, read one
// operator page (the dashboard) for a while: an admin key's holder makes
// it (`redrain admin dashboard`), the node checks it like a signature. It
// is "ID~EXPIRY~MAC": the key id, the expiry in unix seconds, and the hex
// HMAC-SHA256, under the key's secret, of "redrain-ticket", the scope, the
// id and the expiry, one per line. It names what it opens (scope) and
// expires; it is not bound to one request, so it is kept out of logs and
// pages shared with others.
const (
	ticketSep = "~"
	// TicketTTLMax is the longest a ticket may live.
	TicketTTLMax = 24 * time.Hour
)

// Ticket makes a ticket of key for scope, valid until expires.
func Ticket(key Key, scope string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return key.ID + ticketSep + exp + ticketSep + hex.EncodeToString(ticketMAC(key.Secret, scope, key.ID, exp))
}

func ticketMAC(secret []byte, scope, id, exp string) []byte {
	return mac(secret, "redrain-ticket\n"+scope+"\n"+id+"\n"+exp)
}

// VerifyTicket checks a ticket for scope against v's keys and clock and
// returns the id of the key that made it; a failure is an *Error.
func (v *Verifier) VerifyTicket(scope, ticket string) (keyID string, err error) {
	if ticket == "" {
		return fail(ReasonUnsigned, "no ticket (`redrain admin dashboard` prints a URL with one)")
	}
	parts := strings.Split(ticket, ticketSep)
	if len(parts) != 3 {
		return fail(ReasonMalformed, "a ticket is ID~EXPIRY~MAC")
	}
	id, exp, sig := parts[0], parts[1], parts[2]
	if !validKeyID(id) {
		return fail(ReasonMalformed, "the ticket's key id is not 1-%d characters of [A-Za-z0-9._-]", KeyIDLenMax)
	}
	secs, perr := strconv.ParseInt(exp, 10, 64)
	if perr != nil {
		return fail(ReasonMalformed, "the ticket's expiry is not unix seconds")
	}
	if len(sig) != signatureLen || !lowerHex([]byte(sig)) {
		return fail(ReasonMalformed, "the ticket's MAC is not %d lowercase hex digits", signatureLen)
	}
	key, ok := v.Keys[id]
	if !ok {
		return fail(ReasonUnknownKey, "no admin key %q", id)
	}
	got, _ := hex.DecodeString(sig)
	if !hmac.Equal(got, ticketMAC(key.Secret, scope, id, exp)) {
		return fail(ReasonBadSignature, "the ticket's MAC does not match (another key, scope or expiry)")
	}
	t := now(v.Now)
	expires := time.Unix(secs, 0)
	switch {
	case !t.Before(expires):
		return fail(ReasonExpired, "the ticket expired at %s", expires.UTC().Format(time.RFC3339))
	case expires.Sub(t) > TicketTTLMax+time.Minute:
		return fail(ReasonExpired, "the ticket lives past %s from now (at most %v)", expires.UTC().Format(time.RFC3339), TicketTTLMax)
	}
	return id, nil
}
