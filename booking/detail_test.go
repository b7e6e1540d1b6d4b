package booking_test

import (
	"context"
	"reflect"
	"testing"

	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// TestDetail reads every page of an account that booked 150 grants over
// five months, whose history chunks are in the store: each page is the one
// ledger.ReadDetail makes from the chunks in memory, and so is each page of
// the same account as a node that predates monthly summaries sends it (an
// account record of version 2: its summaries come from its chunks).
func TestDetail(t *testing.T) {
	ctx := context.Background()
	kv := storagetest.TiKV(t, "")
	a, chunks := bookHistory(t, kv, 150, 30)
	v2 := ledger.MarshalAccountVersion(nil, a, 2)
	old, err := ledger.UnmarshalAccount(v2)
	if err != nil || old.MonthsKnown() {
		t.Fatalf("UnmarshalAccount(version 2) = %+v, %v, want its months unknown", old, err)
	}
	mem := func(n uint64) ([]ledger.Entry, error) { return chunks[n], nil }
	for _, limit := range []int{1, 30, ledger.DetailLimitMax} {
		q := ledger.DetailQuery{Before: a.EntryCount(), Limit: limit}
		for pages := 0; ; pages++ {
			want, err := ledger.ReadDetail(a, q, mem, a)
			if err != nil {
				t.Fatal(err)
			}
			for _, acct := range []*ledger.Account{a, old} {
				got, err := booking.Detail(ctx, kv, acct, q, nil)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("limit %d page %d (months known %v): Detail = %+v, %v, want %+v", limit, pages, acct.MonthsKnown(), got, err, want)
				}
			}
			if !want.More {
				break
			}
			q.Before = want.Next
		}
	}
	if old.MonthsKnown() {
		t.Error("Detail filled the months of the account it was given, not of a copy")
	}
}

// BenchmarkDetail reads one ledger page of 20 entries of an account that
// booked 1,000 grants, from the embedded store: of its recent entries (no
// snapshot), and from the middle of its history (one snapshot, one batch
// of chunks).
//
//	go test ./booking -run '^$' -bench Detail -benchtime 2000x
func BenchmarkDetail(b *testing.B) {
	ctx := context.Background()
	kv := storagetest.TiKV(b, "")
	a, _ := bookHistory(b, kv, 1000, 100)
	for _, tc := range []struct {
		name   string
		before uint64
	}{{"recent", a.EntryCount()}, {"chunks", 500}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := booking.Detail(ctx, kv, a, ledger.DetailQuery{Before: tc.before, Limit: ledger.DetailLimitDefault}, nil)
				if err != nil || len(d.Entries) != ledger.DetailLimitDefault {
					b.Fatalf("Detail: %v", err)
				}
			}
		})
	}
}

// bookHistory books n grants of amounts 1..n into act 77, perMonth in each
// month from 2026-09, and writes the history chunks it archives into kv;
// it returns the account and its chunks.
func bookHistory(t testing.TB, kv *storage.TiKV, n, perMonth uint64) (*ledger.Account, [][]ledger.Entry) {
	t.Helper()
	const act = 77
	a := &ledger.Account{ActID: act}
	var chunks [][]ledger.Entry
	err := kv.Update(context.Background(), func(txn storage.Txn) error {
		for r := range n {
			g := ledger.Grant{AppID: 1, ActID: act, UserID: "u", ActivityID: "demo", SceneID: "rain", RainID: r + 1,
				Stage: tokens.StageFormal, AwardType: "cash", Asset: ledger.AssetCash, Amount: int64(r + 1),
				BudgetID: "demo/formal/cash", LeaseID: 1, OpenTime: 1, IssuedAt: 2}
			if ok, err := a.Book(&g, 1_790_000_000_000+int64(r/perMonth)*31*24*3600*1000); !ok || err != nil {
				t.Fatalf("Book: %v, %v", ok, err)
			}
			if k, c, ok := a.TakeSealed(); ok {
				chunks = append(chunks, c)
				if err := txn.Set(storage.HistKey(act, k), ledger.AppendChunk(nil, act, k, c)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, chunks
}
