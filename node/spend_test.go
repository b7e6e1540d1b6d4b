package node_test

import (
	"testing"

	"redrain/storage/storagetest"
)

// TestSpendBeforeBookingMoves: a node wired with its own Booker (no
// Config.Moves) checks a spending request against the accounts booking
// holds, then answers 503 unavailable and books nothing, since booking
// cannot book moves yet (node/spend.go, movesPending).
func TestSpendBeforeBookingMoves(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	g := grantAll(t, n, []string{"sp-1"})[0]
	waitBooked(t, n, 1)
	consume := func(act uint64) map[string]any {
		return map[string]any{"request_id": "c-1", "app_id": 1, "act_id": act, "amount": 1, "asset": "cash", "merchant_id": "shop"}
	}
	if code, c := postCode(t, n, "/v1/spend/consume", consume(g.ActID)); code != 503 || c != "unavailable" {
		t.Errorf("consume on a booked account = %d %s, want 503 unavailable", code, c)
	}
	if code, c := postCode(t, n, "/v1/spend/consume", consume(1<<40)); code != 403 || c != "forbidden" {
		t.Errorf("consume on an account with no record = %d %s, want 403 forbidden", code, c)
	}
	bad := consume(g.ActID)
	bad["amount"] = 0
	if code, c := postCode(t, n, "/v1/spend/consume", bad); code != 400 || c != "malformed_request" {
		t.Errorf("consume of 0 = %d %s, want 400 malformed_request", code, c)
	}
}
