package node_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/node"
	"redrain/storage/storagetest"
	"redrain/withdraw/paytest"
)

func TestParsePayoutChannel(t *testing.T) {
	for _, c := range []struct {
		in, name, url string
		ok            bool
	}{
		{"bank=https://pay.example.com/", "bank", "https://pay.example.com", true},
		{"test=http://127.0.0.1:9000/v1", "test", "http://127.0.0.1:9000/v1", true},
		{"bank", "", "", false},
		{"=https://pay.example.com", "", "", false},
		{"bank=ftp://pay.example.com", "", "", false},
	} {
		name, url, err := node.ParsePayoutChannel(c.in)
		if (err == nil) != c.ok || name != c.name || url != c.url {
			t.Errorf("ParsePayoutChannel(%q) = %q, %q, %v; want %q, %q, ok %v", c.in, name, url, err, c.name, c.url, c.ok)
		}
	}
}

// TestWithdrawThroughBooking: a node with no configured ledger withdraws
// through its own: the user's packet, issued and not booked yet, is booked
// first (the grant path's Outstanding, booking's Book), then the amount is
// held, paid by the channel over HTTP and settled (booking's Move); the
// account ends with nothing in cash or in transit (the packet, the hold's
// two legs, the settlement), and a second withdrawal finds too little.
func TestWithdrawThroughBooking(t *testing.T) {
	pay := paytest.New()
	t.Cleanup(pay.Close)
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), configFile(t), func(c *node.Config) {
		c.Withdraw = node.WithdrawConfig{Channels: map[string]string{"bank": pay.URL}, Min: 1}
	})
	a := newAPICheck(t, n)
	var g grantAnswer
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "wd-1", "demo", "rain", 1), sign: asApp(1), want: 200}).json(t, &g)
	body := func(amount int64, request string) string {
		return fmt.Sprintf(`{"act_id":%d,"amount":%d,"channel":"bank","request_id":%q}`, g.ActID, amount, request)
	}
	var w struct{ ID, State string }
	a.do(call{method: "POST", path: "/v1/withdrawals", body: body(g.Amount, "w-1"), sign: asApp(1), want: 200}).json(t, &w)
	if w.State != "settled" {
		t.Fatalf("withdrawal %+v, want settled", w)
	}
	// Once the stream's event is booked (it attributes the packet and
	// binds the app's user), the account is the app's on record.
	waitBooked(t, n, 1)
	a.do(call{method: "POST", path: "/v1/withdrawals", body: body(1, "w-2"), sign: asApp(1), want: 409, code: "insufficient_funds"})
	accounts, err := n.Booker().Accounts(context.Background(), []uint64{g.ActID})
	if err != nil {
		t.Fatal(err)
	}
	acc := accounts[g.ActID]
	if acc == nil || acc.Balance(ledger.AssetCash) != 0 || acc.Balance(ledger.AssetTransit) != 0 || len(acc.Entries) != 4 {
		t.Fatalf("account after the withdrawal: %+v", acc)
	}
}

// TestWithdrawWhileBookingHeld: while booking reads no grant record
// (Booker.HoldStream), a packet granted through the API stays outstanding
// and the node stays ready; a withdrawal of it books it itself (Book),
// pays and settles; once the hold ends booking reads the packet's record
// and only attributes it, and the audit passes.
func TestWithdrawWhileBookingHeld(t *testing.T) {
	pay := paytest.New()
	t.Cleanup(pay.Close)
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), configFile(t), func(c *node.Config) {
		c.Withdraw = node.WithdrawConfig{Channels: map[string]string{"bank": pay.URL}, Min: 1}
	})
	var held atomic.Bool
	held.Store(true)
	n.Booker().HoldStream(held.Load)
	a := newAPICheck(t, n)
	var g grantAnswer
	a.do(call{method: "POST", path: "/v1/grants", body: grantBody(1, "held-1", "demo", "rain", 1), sign: asApp(1), want: 200}).json(t, &g)
	time.Sleep(300 * time.Millisecond) // booking would have read the record by now
	ctx := context.Background()
	if gs, err := n.Grants().Outstanding(ctx, g.ActID); err != nil || len(gs) != 1 {
		t.Fatalf("outstanding while held: %+v, %v; want the packet", gs, err)
	}
	if s := getStats(t, n); s.GrantsBooked != 0 {
		t.Fatalf("stats while held: %+v, want nothing booked", s)
	}
	var w struct{ ID, State string }
	a.do(call{method: "POST", path: "/v1/withdrawals", body: fmt.Sprintf(`{"act_id":%d,"amount":%d,"channel":"bank","request_id":"h-1"}`, g.ActID, g.Amount), sign: asApp(1), want: 200}).json(t, &w)
	if w.State != "settled" || pay.PaidTotal() != g.Amount {
		t.Fatalf("withdrawal %+v, channel paid %d; want settled, %d", w, pay.PaidTotal(), g.Amount)
	}
	held.Store(false)
	waitBooked(t, n, 1)
	if rep := audit(t, n); !rep.OK {
		t.Fatalf("audit after the hold: %+v", rep)
	}
	accounts, err := n.Booker().Accounts(ctx, []uint64{g.ActID})
	if err != nil {
		t.Fatal(err)
	}
	if acc := accounts[g.ActID]; acc == nil || acc.Balance(ledger.AssetCash) != 0 || len(acc.Entries) != 4 {
		t.Fatalf("account after the hold: %+v, want the packet once, the hold's two legs and the settlement", acc)
	}
}
