package adminauth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"redrain/adminauth"
)

func TestTicket(t *testing.T) {
	key := adminauth.MustParseKey("ops:" + strings.Repeat("ab", 32))
	other := adminauth.MustParseKey("ops:" + strings.Repeat("cd", 32))
	now := time.Unix(1_800_000_000, 0)
	v := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": key}, Now: func() time.Time { return now }}
	good := adminauth.Ticket(key, "dashboard", now.Add(time.Hour))
	if id, err := v.VerifyTicket("dashboard", good); err != nil || id != "ops" {
		t.Fatalf("VerifyTicket(good) = %q, %v", id, err)
	}
	for _, tc := range []struct {
		name, scope, ticket, reason string
	}{
		{"none", "dashboard", "", adminauth.ReasonUnsigned},
		{"not three parts", "dashboard", "ops~1", adminauth.ReasonMalformed},
		{"bad expiry", "dashboard", "ops~soon~" + strings.Repeat("0", 64), adminauth.ReasonMalformed},
		{"unknown key", "dashboard", adminauth.Ticket(adminauth.MustParseKey("dev:"+strings.Repeat("ab", 32)), "dashboard", now.Add(time.Hour)), adminauth.ReasonUnknownKey},
		{"another key's secret", "dashboard", adminauth.Ticket(other, "dashboard", now.Add(time.Hour)), adminauth.ReasonBadSignature},
		{"another scope", "other", good, adminauth.ReasonBadSignature},
		{"expiry altered", "dashboard", strings.Replace(good, "~1800003600~", "~1800007200~", 1), adminauth.ReasonBadSignature},
		{"expired", "dashboard", adminauth.Ticket(key, "dashboard", now), adminauth.ReasonExpired},
		{"too long", "dashboard", adminauth.Ticket(key, "dashboard", now.Add(48*time.Hour)), adminauth.ReasonExpired},
	} {
		_, err := v.VerifyTicket(tc.scope, tc.ticket)
		var e *adminauth.Error
		if !errors.As(err, &e) || e.Reason != tc.reason {
			t.Errorf("%s: VerifyTicket = %v, want reason %s", tc.name, err, tc.reason)
		}
	}
}
