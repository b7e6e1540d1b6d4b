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

// BenchmarkApplyUnits applies units of 4,000 grants in memory, as an owner
// does in a burst, and settles each at once (no store): the per-grant work
// of apply (the copy-on-write touch, the entry, the unit's change list, the
// second computation of its money and the journal), measured without the
// commits and checkpoints around it. new: every grant a new user's (act_ids
// of one partition's share, in order, as a burst hands them out); known:
// every grant a new rain of a user booked before (the accounts exist and
// their pages are hot). ns/op is per grant.
func BenchmarkApplyUnits(b *testing.B) {
	const unitGrants = 4000
	grantOf := func(act, rain uint64) ledger.Grant {
		return ledger.Grant{AppID: 1, ActID: act, UserID: "u-0123456789", ActivityID: "demo", SceneID: "rain",
			RainID: rain, Stage: tokens.StageFormal, AwardType: "cash", Asset: ledger.AssetCash, Amount: 100,
			BudgetID: "demo/formal/cash", LeaseID: 1, OpenTime: 1, IssuedAt: 2}
	}
	for _, known := range []bool{false, true} {
		name := "new"
		if known {
			name = "known"
		}
		b.Run(name, func(b *testing.B) {
			p := &part{b: &Booker{clock: time.Now, log: slog.New(slog.DiscardHandler)},
				pages: map[uint64]*pageMem{}, next: ledger.PartState{NextSeq: 1}}
			gs := make([]ledger.Grant, 0, unitGrants)
			run := func(n int, rain uint64, act func(i int) uint64) {
				for done := 0; done < n; {
					gs = gs[:0]
					for k := 0; k < unitGrants && done < n; k++ {
						gs = append(gs, grantOf(act(done), rain))
						done++
					}
					u := p.newUnit()
					u.grants = gs
					if err := p.apply(u); err != nil || u.booked != len(gs) {
						b.Fatalf("apply: %d of %d booked, %v", u.booked, len(gs), err)
					}
					p.finish(u)
				}
			}
			users := b.N
			if known {
				users = min(b.N, 400_000)
				run(users, 1, func(i int) uint64 { return 1 + 8*uint64(i) })
			}
			b.ReportAllocs()
			b.ResetTimer()
			rain := uint64(2)
			for left := b.N; left > 0; left -= users {
				run(min(left, users), rain, func(i int) uint64 { return 1 + 8*uint64(i) })
				rain++
			}
		})
	}
}
