package node_test

import (
	"testing"

	"redrain/storage/storagetest"
)

// TestSpendThroughBooking: a node wired with its own Booker (no
// Config.Moves) books a spending request through booking's moves: a
// consumption within the balance books, a repeat is answered again, one
// beyond the balance is insufficient_funds, and an account with no record
// is refused before anything is booked.
func TestSpendThroughBooking(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	g := grantAll(t, n, []string{"sp-1"})[0]
	waitBooked(t, n, 1)
	consume := func(act uint64, id string, amount int64) map[string]any {
		return map[string]any{"request_id": id, "app_id": 1, "act_id": act, "amount": amount, "asset": "cash", "merchant_id": "shop"}
	}
	if code, c := postCode(t, n, "/v1/spend/consume", consume(g.ActID, "c-1", 1)); code != 200 {
		t.Fatalf("consume of 1 fen on a booked account = %d %s, want 200", code, c)
	}
	if code, c := postCode(t, n, "/v1/spend/consume", consume(g.ActID, "c-1", 1)); code != 200 {
		t.Errorf("the same consumption again = %d %s, want 200 (replayed)", code, c)
	}
	if code, c := postCode(t, n, "/v1/spend/consume", consume(g.ActID, "c-2", g.Amount)); code != 409 || c != "insufficient_funds" {
		t.Errorf("consume of the whole grant after 1 fen = %d %s, want 409 insufficient_funds", code, c)
	}
	if code, c := postCode(t, n, "/v1/spend/consume", consume(1<<40, "c-3", 1)); code != 403 || c != "forbidden" {
		t.Errorf("consume on an account with no record = %d %s, want 403 forbidden", code, c)
	}
	bad := consume(g.ActID, "c-4", 0)
	if code, c := postCode(t, n, "/v1/spend/consume", bad); code != 400 || c != "malformed_request" {
		t.Errorf("consume of 0 = %d %s, want 400 malformed_request", code, c)
	}
}
