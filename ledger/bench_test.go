package ledger_test

import (
	"fmt"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

// benchGrants returns n grants of one user with distinct limit keys, shaped
// like production grants.
func benchGrants(n int) []ledger.Grant {
	gs := make([]ledger.Grant, n)
	for i := range gs {
		gs[i] = grant(123_456_789, "lobby", uint64(1_000+i), tokens.StageFormal, "cash", int64(1+i%888))
		gs[i].UserID = fmt.Sprintf("wx-user-%d", i)
		gs[i].LeaseID = uint64(i / 64)
	}
	return gs
}

// BenchmarkAccountBook books one new grant per op into an account that
// holds up to accountEntries grants (it is emptied when full, which the
// figure amortizes), then books a redelivery of it, as booking does for a
// redelivered batch.
func BenchmarkAccountBook(b *testing.B) {
	const accountEntries = 256
	gs := benchGrants(accountEntries)
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		a := &ledger.Account{ActID: gs[0].ActID}
		i := 0
		for b.Loop() {
			if i == len(gs) {
				a, i = &ledger.Account{ActID: gs[0].ActID}, 0
			}
			if ok, err := a.Book(&gs[i], 1); !ok || err != nil {
				b.Fatalf("Book: %v, %v", ok, err)
			}
			i++
		}
	})
	b.Run("duplicate", func(b *testing.B) {
		b.ReportAllocs()
		a := &ledger.Account{ActID: gs[0].ActID}
		for i := range gs {
			a.Book(&gs[i], 1)
		}
		i := 0
		for b.Loop() {
			if ok, err := a.Book(&gs[i%len(gs)], 2); ok || err != nil {
				b.Fatalf("Book: %v, %v", ok, err)
			}
			i++
		}
	})
}

// BenchmarkAppendGrantRecord encodes one Kafka record of 64 grants into a
// reused buffer.
func BenchmarkAppendGrantRecord(b *testing.B) {
	gs := benchGrants(64)
	buf := ledger.AppendGrantRecord(nil, gs)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = ledger.AppendGrantRecord(buf[:0], gs)
	}
}

// BenchmarkDecodeGrantRecord decodes one record of 64 grants into a reused
// slice; the allocations are the decoded strings.
func BenchmarkDecodeGrantRecord(b *testing.B) {
	rec := ledger.AppendGrantRecord(nil, benchGrants(64))
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	var gs []ledger.Grant
	for b.Loop() {
		var err error
		if gs, err = ledger.DecodeGrantRecord(gs[:0], rec); err != nil || len(gs) != 64 {
			b.Fatalf("DecodeGrantRecord: %d, %v", len(gs), err)
		}
	}
}

// benchJournal is a journal of n bookings to new users under one lease, as
// a partition's owner writes one.
func benchJournal(n int) *ledger.Journal {
	j := &ledger.Journal{Seq: 1, BookedAt: 1_700_000_001_000, From: 0, To: int64(n)}
	for i := range n {
		g := grant(uint64(1<<20+2*i), "lobby", 1, tokens.StageFormal, "cash", int64(1+i%500))
		g.UserID = fmt.Sprintf("user-%d", g.ActID)
		g.IssuedAt += int64(i / 10)
		j.Ops = append(j.Ops, ledger.Op{Kind: ledger.OpBook, Grant: g})
	}
	return j
}

// benchPage is a page of n accounts holding one booked grant each.
func benchPage(b *testing.B, n int) *ledger.Page {
	p := &ledger.Page{Seq: 1}
	for _, op := range benchJournal(n).Ops {
		a := &ledger.Account{ActID: op.Grant.ActID, Version: 1}
		if _, err := op.Apply(a, 1_700_000_001_000); err != nil {
			b.Fatal(err)
		}
		p.Accounts = append(p.Accounts, a)
	}
	return p
}

// BenchmarkJournalCodec encodes and decodes a journal of 2,500 bookings in
// the current format (v2) and the one before it (v1, appendJournalV1).
func BenchmarkJournalCodec(b *testing.B) {
	const n = 2500
	benchCodec(b, benchJournal(n), n, "bytes/grant",
		func(raw []byte) error { _, err := ledger.DecodeJournal(raw); return err },
		codecFormat[*ledger.Journal]{"v1", appendJournalV1}, codecFormat[*ledger.Journal]{"v2", ledger.AppendJournal})
}

// BenchmarkPageCodec encodes and decodes a page of 512 accounts with one
// entry each (a page of a partition of two, after one rain) in every
// format: version 3 (monthly summaries) writes nothing more for them, their
// summaries being their entries'; version 4 no trade number (derived).
// heavy/ is a page of 64 accounts that each booked 100 grants over 10
// months (archived entries: from version 3 their monthly summaries are
// written). The version 3 writer here derives each entry's trade number
// to write it whole (a SHA-256 an entry): its append time is not what a
// node before version 4 spent.
func BenchmarkPageCodec(b *testing.B) {
	decode := func(raw []byte) error { _, err := ledger.DecodePage(raw); return err }
	formats := []codecFormat[*ledger.Page]{{"v1", appendPageV1}, {"v2", ledger.AppendPageV2}, {"v3", ledger.AppendPageV3}, {"v4", ledger.AppendPage}}
	const n = 512
	benchCodec(b, benchPage(b, n), n, "bytes/account", decode, formats...)
	b.Run("heavy", func(b *testing.B) {
		const accounts, grants = 64, 100
		p := &ledger.Page{Seq: 1}
		for i := range accounts {
			a := &ledger.Account{ActID: uint64(1<<20 + 2*i), Version: 1}
			for r := range grants {
				g := grant(a.ActID, "lobby", uint64(r+1), tokens.StageFormal, "cash", int64(1+r%500))
				if _, err := a.Book(&g, 1_700_000_001_000+int64(r/10)*31*24*3600*1000); err != nil {
					b.Fatal(err)
				}
			}
			a.TakeSealed()
			p.Accounts = append(p.Accounts, a)
		}
		benchCodec(b, p, accounts, "bytes/account", decode, formats[1:]...)
	})
}

// codecFormat is one format's encoder.
type codecFormat[V any] struct {
	name string
	enc  func([]byte, V) []byte
}

// benchCodec runs append and decode of v in each format; unit is the
// value's size per one of its n grants or accounts.
func benchCodec[V any](b *testing.B, v V, n int, unit string, decode func([]byte) error, formats ...codecFormat[V]) {
	for _, f := range formats {
		raw := f.enc(nil, v)
		b.Run("append/"+f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.enc(make([]byte, 0, len(raw)), v)
			}
			b.ReportMetric(float64(len(raw))/float64(n), unit)
		})
		b.Run("decode/"+f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := decode(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGrantRecordCodec encodes and decodes one record of 100 grants of
// 100 users (a shard's batch) as version 2 (the layout before protobuf,
// appendGrantRecordV2) and version 3 (protobuf, AppendGrantRecord); with
// -count N the two alternate.
func BenchmarkGrantRecordCodec(b *testing.B) {
	const n = 100
	gs := benchGrants(n)
	for i := range gs {
		gs[i].ActID += uint64(i) * 7919
	}
	for _, f := range []struct {
		name string
		enc  func([]byte, []ledger.Grant) []byte
	}{{"v2", appendGrantRecordV2}, {"v3", ledger.AppendGrantRecord}} {
		raw := f.enc(nil, gs)
		b.Run("append/"+f.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, len(raw))
			for b.Loop() {
				buf = f.enc(buf[:0], gs)
			}
			b.ReportMetric(float64(len(raw))/n, "bytes/grant")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/grant")
		})
		b.Run("decode/"+f.name, func(b *testing.B) {
			b.ReportAllocs()
			var out []ledger.Grant
			for b.Loop() {
				var err error
				if out, err = ledger.DecodeGrantRecord(out[:0], raw); err != nil || len(out) != n {
					b.Fatalf("DecodeGrantRecord: %d, %v", len(out), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/grant")
		})
	}
}

// BenchmarkReadDetail reads one ledger page of 20 entries of an account
// that booked 1,000 grants over 10 months (in memory: the history chunks a
// map), newest first and from the middle of its history (the chunks), and
// with a filter that a third of the entries match.
func BenchmarkReadDetail(b *testing.B) {
	const grants = 1000
	a := &ledger.Account{ActID: 9}
	chunks := map[uint64][]ledger.Entry{}
	assets := []ledger.Asset{ledger.AssetCash, "coin:gold", "item:card"}
	for r := range grants {
		g := grant(a.ActID, "lobby", uint64(r+1), tokens.StageFormal, "cash", int64(1+r%500))
		g.Asset = assets[r%3]
		if _, err := a.Book(&g, 1_700_000_001_000+int64(r/100)*31*24*3600*1000); err != nil {
			b.Fatal(err)
		}
		if n, c, ok := a.TakeSealed(); ok {
			chunks[n] = c
		}
	}
	chunk := func(n uint64) ([]ledger.Entry, error) { return chunks[n], nil }
	for _, tc := range []struct {
		name string
		q    ledger.DetailQuery
	}{
		{"newest", ledger.DetailQuery{Before: a.EntryCount(), Limit: 20}},
		{"chunks", ledger.DetailQuery{Before: 510, Limit: 20}},
		{"filtered", ledger.DetailQuery{Asset: "coin:gold", Before: a.EntryCount(), Limit: 20}},
		{"max", ledger.DetailQuery{Before: 510, Limit: ledger.DetailLimitMax}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ledger.ReadDetail(a, tc.q, chunk, a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
