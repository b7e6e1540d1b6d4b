package booking

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/tokens"
)

// BenchmarkApplyHeavyUser books one grant per unit in memory, as an owner
// does, and encodes the user's account as a checkpoint would: into a user
// who already holds 5,000 entries, and into a new user each time. With the
// oldest entries in history chunks the two cost about the same (compare
// their ns/op); before, the heavy user's copy, index and encoding grew with
// every entry it ever booked. The cost is bounded by the recent entries an
// account keeps (ledger.ChunkEntries to twice that), whatever its history.
func BenchmarkApplyHeavyUser(b *testing.B) {
	grantOf := func(act, rain uint64) ledger.Grant {
		return ledger.Grant{AppID: 1, ActID: act, UserID: fmt.Sprint("u", act), ActivityID: "demo", SceneID: "rain",
			RainID: rain, Stage: tokens.StageFormal, AwardType: "cash", Asset: ledger.AssetCash, Amount: 100,
			BudgetID: "demo/formal/cash", LeaseID: 1, OpenTime: 1, IssuedAt: 2}
	}
	for _, held := range []int{0, 5000, 50000} {
		b.Run(fmt.Sprintf("entries=%d", held), func(b *testing.B) {
			p := &part{b: &Booker{clock: time.Now, log: slog.New(slog.DiscardHandler)},
				pages: map[uint64]*pageMem{}, next: ledger.PartState{NextSeq: 1}}
			book := func(g ledger.Grant) {
				u := p.newUnit()
				u.grants = []ledger.Grant{g}
				if err := p.apply(u); err != nil || u.outcomes[0] != BookedNow {
					b.Fatalf("apply: %v, %v", u.outcomes, err)
				}
				_ = ledger.MarshalAccount(nil, p.account(g.ActID))
			}
			const heavy = 7
			for rain := range held {
				book(grantOf(heavy, uint64(rain)+1))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if held == 0 {
					book(grantOf(1_000_000+uint64(i), 1))
				} else {
					book(grantOf(heavy, uint64(held+i)+1))
				}
			}
		})
	}
}
