package closing_test

import (
	"context"
	"flag"
	"fmt"
	"testing"

	"redrain/closing"
	"redrain/ledger"
	"redrain/statement"
	"redrain/storage"
)

// benchOps is a month's postings: 10M ops in journals of 1,000, booked
// over 30 days, by 100,000 users.
const (
	benchOps        = 10_000_000
	benchJournalOps = 1_000
	benchUsers      = 100_000
	benchMaxOps     = 20_000 // one fold's transaction, as the node folds
)

func benchGrantJournals(n int) [][]byte {
	out := make([][]byte, 0, n/benchJournalOps)
	span := int64(30*86_400_000) / int64(n/benchJournalOps)
	for i := range n / benchJournalOps {
		at := day1 + int64(i)*span
		j := &ledger.Journal{Seq: uint64(i + 1), BookedAt: at}
		for k := range benchJournalOps {
			act := uint64((i*benchJournalOps + k*7919) % benchUsers)
			j.Ops = append(j.Ops, ledger.Op{Kind: ledger.OpBook, Grant: ledger.Grant{AppID: 1, ActID: act, UserID: fmt.Sprint("u", act),
				ActivityID: []string{"newyear", "spring"}[k%2], SceneID: "lobby", RainID: 1, AwardType: "cash",
				Asset: ledger.AssetCash, Amount: int64(1 + k%500), BudgetID: "newyear/formal/cash", LeaseID: 1, IssuedAt: at}})
		}
		out = append(out, ledger.AppendJournal(nil, j))
	}
	return out
}

// fold folds journals as a Folder does, without the store: aggregates
// drained and encoded every benchMaxOps ops.
func fold(b *testing.B, cfg *statement.Config, n int, journal func(i int) *ledger.Journal) (days int) {
	g, err := statement.NewAggregator(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	ops := 0
	drain := func() {
		for _, d := range g.Days() {
			buf = statement.AppendAggregate(buf[:0], d.Agg)
			days++
		}
		ops = 0
	}
	for i := range n {
		j := journal(i)
		if err := closing.Postings(j, g.Add); err != nil {
			b.Fatal(err)
		}
		if ops += len(j.Ops); ops >= benchMaxOps {
			drain()
		}
	}
	drain()
	return days
}

// foldEncoded folds encoded journals, each decoded as the folder reads it.
func foldEncoded(b *testing.B, cfg *statement.Config, js [][]byte) {
	fold(b, cfg, len(js), func(i int) *ledger.Journal {
		j, err := ledger.DecodeJournal(js[i])
		if err != nil {
			b.Fatal(err)
		}
		return j
	})
}

// BenchmarkMonthGrants: a month of 10M encoded grant ops decoded, folded
// and their day aggregates encoded.
func BenchmarkMonthGrants(b *testing.B) {
	js := benchGrantJournals(benchOps)
	cfg := &statement.Config{Sponsors: map[string]string{"newyear": "acme", "spring": "acme"}}
	b.ResetTimer()
	for range b.N {
		foldEncoded(b, cfg, js)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchOps, "ns/op-posting")
}

// BenchmarkMonthConsumes: a month of 10M consumptions at 1,000 merchants,
// encoded as booking writes them (OpMove), decoded, each split (host,
// platform, technical fee, merchant) and folded.
func BenchmarkMonthConsumes(b *testing.B) {
	n := benchOps / benchJournalOps
	js := make([][]byte, n)
	span := int64(30*86_400_000) / int64(n)
	for i := range js {
		j := &ledger.Journal{Seq: uint64(i + 1), BookedAt: day1 + int64(i)*span}
		for k := range benchJournalOps {
			act := uint64((i*benchJournalOps + k*7919) % benchUsers)
			j.Ops = append(j.Ops, ledger.Op{Kind: ledger.OpMove, Move: &ledger.Move{ActID: act, Kind: ledger.MoveConsume,
				Key: fmt.Sprint("1:c-", i, "-", k), AppID: 1, Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -int64(1 + k%9_999)}},
				Counter: fmt.Sprint("merchant/m", k%1_000)}})
		}
		js[i] = ledger.AppendJournal(nil, j)
	}
	cfg := &statement.Config{Default: &seedRule}
	b.ResetTimer()
	for range b.N {
		foldEncoded(b, cfg, js)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchOps, "ns/op-posting")
}

// storeOps is how many ops BenchmarkFoldStore folds: 1M by default, a
// month's 10M with -closing.store-ops 10000000 (BENCHMARKS.md).
var storeOps = flag.Int("closing.store-ops", 1_000_000, "ops BenchmarkFoldStore folds through the store")

// BenchmarkFoldStore: encoded grant ops folded through the store (the
// in-memory one: Folder's transactions, watermarks and day aggregates
// read, merged and written).
func BenchmarkFoldStore(b *testing.B) {
	ops := *storeOps
	js := benchGrantJournals(ops)
	cfg := &statement.Config{Sponsors: map[string]string{"newyear": "acme", "spring": "acme"}}
	for range b.N {
		b.StopTimer()
		mem := storage.NewMemoryStore()
		db := mem.Client(nil)
		err := db.Update(context.Background(), func(txn storage.Txn) error {
			for i, raw := range js {
				if err := txn.Set(storage.JournalKey(0, uint64(i+1)), raw); err != nil {
					return err
				}
			}
			return txn.Set(storage.PartKey(0), ledger.AppendPartState(nil, &ledger.PartState{Epoch: 1, NextSeq: uint64(len(js) + 1)}))
		})
		if err != nil {
			b.Fatal(err)
		}
		f := &closing.Folder{DB: db, Parts: 1, Config: cfg, MaxOps: benchMaxOps, Now: func() int64 { return day1 }}
		b.StartTimer()
		pr, err := f.FoldAll(context.Background())
		if err != nil || pr.Ops != ops {
			b.Fatalf("%+v %v", pr, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(ops), "ns/op-posting")
}
