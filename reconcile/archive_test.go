package reconcile_test

import (
	"strings"
	"testing"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestArchivedHistory adds to the healthy store a user with 70 packets
// under the open lease, whose oldest entries booking archived into history
// chunks: the audit reads the chunks and passes; a missing chunk, or one
// whose amounts differ from the account's archived sum, or monthly
// summaries that its entries do not make, is reported.
func TestArchivedHistory(t *testing.T) {
	t.Parallel()
	const heavy, packets = 500, 70
	for _, tc := range []struct {
		name   string
		tamper func(chunks map[uint64][]ledger.Entry)
		months func(a *ledger.Account)
		want   string // in a violation of balances_match_postings; "" for none
	}{
		{name: "healthy"},
		// One unit of January's income moved to February: the sums still
		// match the balance, and February still holds its recent entries.
		{name: "month moved", months: func(a *ledger.Account) { a.Months[0].Income--; a.Months[1].Income++ }, want: "monthly summaries"},
		{name: "chunk missing", tamper: func(c map[uint64][]ledger.Entry) { delete(c, 0) }, want: "history chunk 0 missing"},
		{name: "chunk amount changed", tamper: func(c map[uint64][]ledger.Entry) { c[0][3].Amount++ }, want: "archived cash sum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := storagetest.TiKV(t, "")
			writeHealthy(t, kv)
			update(t, kv, func(txn storage.Txn) error {
				a := &ledger.Account{ActID: heavy}
				h := &ledger.HotDetail{BudgetID: budgetID}
				chunks := map[uint64][]ledger.Entry{}
				for i := range uint64(packets) {
					g := grantOf(heavy, openLease)
					g.RainID, g.Amount = 100+i, 1
					at := int64(3) // January 1970, then February
					if i >= 40 {
						at = 40 * 24 * 3600 * 1000
					}
					if ok, err := a.Book(&g, at); err != nil || !ok {
						t.Fatalf("Book: %v, %v", ok, err)
					}
					if n, entries, ok := a.TakeSealed(); ok {
						chunks[n] = entries
					}
					if err := h.Add(&g); err != nil {
						return err
					}
				}
				if a.Archived == 0 {
					t.Fatal("nothing archived")
				}
				if tc.tamper != nil {
					tc.tamper(chunks)
				}
				if tc.months != nil {
					tc.months(a)
				}
				for n, entries := range chunks {
					if err := txn.Set(storage.HistKey(heavy, n), ledger.AppendChunk(nil, heavy, n, entries)); err != nil {
						return err
					}
				}
				if err := putAccount(txn, a); err != nil {
					return err
				}
				return txn.Set(storage.HotKey(budgetID, txn.StartTS(), 9), ledger.MarshalHotDetail(nil, h))
			})
			r := run(t, kv)
			c := check(t, r, postings)
			if tc.want == "" {
				if !r.OK {
					t.Fatalf("audit failed:\n%s", text(r))
				}
				return
			}
			if c.OK || !strings.Contains(strings.Join(c.Violations, "\n"), tc.want) {
				t.Errorf("check %s: %v, want a violation with %q", c.Name, c.Violations, tc.want)
			}
		})
	}
}
