package ingress

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"redrain/booking"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/tokens"
)

// accountBooker books through a booking.Booker that owns no partition (its
// grants go straight into the store, as on a node that does not book their
// partition) and keeps what it was asked.
type accountBooker struct {
	*booking.Booker
	booked []ledger.Grant
}

func newAccountBooker(kv *storage.TiKV) *accountBooker {
	return newAccountBookerOn(kv, storage.GrantPartitionsDefault)
}

// newAccountBookerOn is newAccountBooker for a topic of parts partitions.
func newAccountBookerOn(kv *storage.TiKV, parts int32) *accountBooker {
	return &accountBooker{Booker: booking.New(booking.Config{Log: slog.Default(), TiKV: kv,
		Partitions: parts, Metrics: &metrics.Registry{}, Clock: time.Now})}
}

func (b *accountBooker) Book(ctx context.Context, gs []ledger.Grant) ([]byte, error) {
	b.booked = append(b.booked, gs...)
	return b.Booker.Book(ctx, gs)
}

// TestLegacyTokens: a version 1 token, sealed before keys named the
// activity, reports and redeems under its legacy limit key and trade
// number, once; the same packet under the new keys is another packet; an
// altered version 1 token is invalid.
func TestLegacyTokens(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t, nil)
	booker := newAccountBooker(ts.kv)
	tk := NewTokens(ts.camp, ts.grants.Catalog, ts.kv, booker)
	claims := tokens.Claims{AppID: 1, ActID: 77, ActivityID: "demo", SceneID: "rain", RainID: 1,
		AwardType: "cash", Stage: tokens.StageFormal, Amount: 145, Legacy: true}
	legacy := ts.camp.Ring.Seal(nil, &claims)
	if string(legacy[:2]) != "AQ" {
		t.Fatalf("legacy claims sealed %s, want a version 1 token", legacy)
	}
	const legacyLimit = "77_rain_1_formal"
	wantOTN := tokens.OutTradeNo("77_rain_1_cash_formal")
	if claims.OutTradeNo != wantOTN {
		t.Fatalf("legacy out_trade_no = %s, want %s", claims.OutTradeNo, wantOTN)
	}
	status := func(tok []byte) TokenResult {
		t.Helper()
		res, err := tk.Status(ctx, [][]byte{tok}, 0)
		if err != nil || len(res) != 1 {
			t.Fatalf("Status = %+v, %v", res, err)
		}
		return res[0]
	}
	if r := status(legacy); r.Status != "issued" || r.OutTradeNo != wantOTN || r.Amount != 145 {
		t.Errorf("status of the legacy token = %+v, want issued %s", r, wantOTN)
	}

	// Redeem hands booking a Legacy grant, and books it once.
	for round := range 2 {
		res, err := tk.Redeem(ctx, [][]byte{legacy}, 0)
		if err != nil || len(res) != 1 || res[0].Status != "booked" || res[0].OutTradeNo != wantOTN {
			t.Fatalf("redeem %d of the legacy token = %+v, %v, want booked %s", round, res, err, wantOTN)
		}
	}
	if len(booker.booked) != 1 {
		t.Fatalf("booking was asked %d grants, want 1: %+v", len(booker.booked), booker.booked)
	}
	g := booker.booked[0]
	if !g.Legacy || g.LimitKey() != legacyLimit || g.OutTradeNo() != wantOTN || g.LeaseID != 0 || g.Asset != ledger.AssetCash {
		t.Errorf("redeemed grant = %+v (limit key %s, out_trade_no %s), want a Legacy cash grant under %s, %s, lease 0",
			g, g.LimitKey(), g.OutTradeNo(), legacyLimit, wantOTN)
	}
	err := ts.kv.View(func(txn storage.Txn) error {
		accounts, err := booking.ReadAccounts(ctx, txn, storage.GrantPartitionsDefault, []uint64{77})
		if err != nil {
			return err
		}
		a := accounts[77]
		if a == nil {
			t.Fatal("account 77 not booked")
		}
		if e, ok := a.Entry(legacyLimit); !ok || e.TradeNo() != wantOTN || len(a.Entries) != 1 {
			t.Errorf("account 77 = %+v, want one entry under %s", a.Entries, legacyLimit)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The same packet sealed now names the activity: another limit key and
	// trade number, not booked.
	current := claims
	current.Legacy = false
	tok := ts.camp.Ring.Seal(nil, &current)
	if r := status(tok); r.Status != "issued" || r.OutTradeNo == wantOTN {
		t.Errorf("status of the current token of the same packet = %+v, want issued under another out_trade_no", r)
	}

	// Status asks the ledger: the redeemed legacy token is booked, another
	// user's legacy token is not.
	other := claims
	other.ActID = 78
	tok78 := ts.camp.Ring.Seal(nil, &other)
	got, err := tk.Status(ctx, [][]byte{legacy, tok78}, 0)
	if err != nil || len(got) != 2 || got[0].Status != "booked" || got[1].Status != "issued" {
		t.Errorf("status = %+v, %v; want booked then issued", got, err)
	}

	// An altered version 1 token is invalid and books nothing.
	altered := []byte(string(legacy))
	altered[len(altered)/2] ^= 1
	res, err := tk.Redeem(ctx, [][]byte{altered}, 0)
	if err != nil || len(res) != 1 || res[0].Status != "invalid" || len(booker.booked) != 1 {
		t.Errorf("redeem of an altered legacy token = %+v, %v (booked %d), want invalid and nothing booked", res, err, len(booker.booked))
	}
}

// TestRedeemBoundsTheAmount: a token that holds more than its award can
// draw (the demo's cash is 1..200 fen), a non-positive amount, or an award
// no version offers, is invalid to status and redeem and books nothing,
// however authentic (whoever holds a token key can seal any claims); the
// award's maximum itself books.
func TestRedeemBoundsTheAmount(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t, nil)
	booker := newAccountBooker(ts.kv)
	tk := NewTokens(ts.camp, ts.grants.Catalog, ts.kv, booker)
	seal := func(actID uint64, award string, amount int64) []byte {
		c := tokens.Claims{AppID: 1, ActID: actID, ActivityID: "demo", SceneID: "rain", RainID: 1,
			AwardType: award, Stage: tokens.StageFormal, Amount: amount}
		return ts.camp.Ring.Seal(nil, &c)
	}
	for _, c := range []struct {
		name  string
		token []byte
		want  string
	}{
		{"above the maximum", seal(90, "cash", 201), "amount 201 is above the award's maximum 200"},
		{"a million yuan", seal(91, "cash", 100_000_000), "above the award's maximum 200"},
		{"zero", seal(92, "cash", 0), "amount 0 is not positive"},
		{"negative", seal(93, "cash", -5), "not positive"},
	} {
		for _, op := range []func(context.Context, [][]byte, uint32) ([]TokenResult, error){tk.Status, tk.Redeem} {
			res, err := op(ctx, [][]byte{c.token}, 0)
			if err != nil || len(res) != 1 || res[0].Status != "invalid" || !strings.Contains(res[0].Error, c.want) {
				t.Fatalf("%s: %+v, %v; want invalid: %s", c.name, res, err, c.want)
			}
		}
	}
	if len(booker.booked) != 0 {
		t.Fatalf("booking was asked %d grants for tokens above the maximum", len(booker.booked))
	}
	res, err := tk.Redeem(ctx, [][]byte{seal(94, "cash", 200)}, 0)
	if err != nil || len(res) != 1 || res[0].Status != "booked" {
		t.Fatalf("redeem at the maximum = %+v, %v; want booked", res, err)
	}

	// An award no served version offers ("gift" here) is invalid when no
	// stored version can be asked (a node asks its configuration store:
	// node/stages_test.go).
	if res, err := tk.Status(ctx, [][]byte{seal(95, "gift", 50)}, 0); err != nil || res[0].Status != "invalid" {
		t.Fatalf("status of a token of an award nobody offers = %+v, %v; want invalid", res, err)
	}
	if len(booker.booked) != 1 {
		t.Fatalf("booking was asked %d grants, want the one at the maximum", len(booker.booked))
	}
}
