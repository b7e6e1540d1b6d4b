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
