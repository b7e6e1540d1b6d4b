package ledger_test

import (
	"errors"
	"reflect"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

// TestAccountArchives books 1,000 packets into one account: its recent
// entries stay between one and two chunks, the rest goes into chunks handed
// out once each, in order, which with the recent ones are every entry in
// booking order; every limit key stays booked, the balance is exact, and
// the record round-trips.
func TestAccountArchives(t *testing.T) {
	a := &ledger.Account{ActID: 9}
	var want []ledger.Entry
	var got []ledger.Entry
	var total int64
	for rain := uint64(1); rain <= 1000; rain++ {
		g := grant(9, "lobby", rain, tokens.StageFormal, "cash", int64(rain))
		if !book(t, a, g, int64(rain)) {
			t.Fatalf("rain %d not booked", rain)
		}
		total += g.Amount
		want = append(want, ledger.Entry{LimitKey: g.LimitKey(), AwardType: "cash",
			Asset: ledger.AssetCash, Amount: g.Amount, BookedAt: int64(rain), LeaseID: g.LeaseID})
		if n, chunk, ok := a.TakeSealed(); ok {
			if n != uint64(len(got))/ledger.ChunkEntries || len(chunk) != ledger.ChunkEntries {
				t.Fatalf("rain %d: sealed chunk %d of %d entries after %d archived", rain, n, len(chunk), len(got))
			}
			got = append(got, chunk...)
		}
		if _, _, ok := a.TakeSealed(); ok {
			t.Fatal("a sealed chunk was handed out twice")
		}
	}
	if n := len(a.Entries); n < ledger.ChunkEntries || n >= 2*ledger.ChunkEntries {
		t.Errorf("%d recent entries, want between %d and %d", n, ledger.ChunkEntries, 2*ledger.ChunkEntries-1)
	}
	if a.Archived != uint64(len(got)) || len(got)+len(a.Entries) != 1000 {
		t.Fatalf("archived %d (chunks held %d), recent %d", a.Archived, len(got), len(a.Entries))
	}
	if all := append(got, a.Entries...); !reflect.DeepEqual(all, want) {
		t.Error("chunks then recent entries are not every entry in booking order")
	}
	if a.Balance(ledger.AssetCash) != total {
		t.Errorf("balance %d, want %d", a.Balance(ledger.AssetCash), total)
	}
	for _, e := range want {
		if ok, err := a.Booked(e.LimitKey); !ok || err != nil {
			t.Fatalf("%s not booked any more: %v", e.LimitKey, err)
		}
	}
	again := grant(9, "lobby", 3, tokens.StageFormal, "other", 5) // an archived rain
	if book(t, a, again, 2000) {
		t.Error("a second packet for an archived rain was booked")
	}
	// The record keeps the count and sums of archived entries, not their
	// keys: a decoded account books nothing until they are loaded from its
	// history, then refuses the archived rains again.
	back, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, a))
	if err != nil {
		t.Fatal(err)
	}
	if back.Archived != a.Archived || !reflect.DeepEqual(back.ArchivedSums, a.ArchivedSums) || !reflect.DeepEqual(back.Entries, a.Entries) {
		t.Error("archived account does not round-trip")
	}
	if _, err := back.Book(&again, 2000); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("Book before the archived keys are loaded = %v, want ErrInvariant", err)
	}
	if err := back.SetArchivedKeys(got[:len(got)-1]); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("SetArchivedKeys of a short history = %v, want ErrInvariant", err)
	}
	if err := back.SetArchivedKeys(got); err != nil {
		t.Fatal(err)
	}
	if ok, err := back.Book(&again, 2000); ok || err != nil {
		t.Errorf("Book of an archived rain after loading = %v, %v, want a duplicate", ok, err)
	}
	if len(ledger.MarshalAccount(nil, back)) > 2*len(ledger.MarshalAccount(nil, &ledger.Account{ActID: 9, Entries: a.Entries, Balances: a.Balances})) {
		t.Error("the record grows with its archived entries")
	}
	// A chunk round-trips; a short or tampered one is corrupt.
	enc := ledger.AppendChunk(nil, 9, 0, got[:ledger.ChunkEntries])
	act, n, entries, err := ledger.DecodeChunk(enc)
	if err != nil || act != 9 || n != 0 || !reflect.DeepEqual(entries, got[:ledger.ChunkEntries]) {
		t.Errorf("DecodeChunk = %d, %d, %d entries, %v", act, n, len(entries), err)
	}
	dup := append(append([]ledger.Entry{}, got[:ledger.ChunkEntries-1]...), got[0])
	for name, b := range map[string][]byte{
		"short":     ledger.AppendChunk(nil, 9, 0, got[:ledger.ChunkEntries-1]),
		"truncated": enc[:len(enc)-1],
		"duplicate": ledger.AppendChunk(nil, 9, 0, dup),
	} {
		if _, _, _, err := ledger.DecodeChunk(b); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodeChunk(%s) = %v, want ErrCorrupt", name, err)
		}
	}
}

// TestArchiveWaitsForAttribution: an entry redeemed under lease 0 is not
// archived (its chunk would be immutable) until its stream event attributes
// it; then the next booking archives.
func TestArchiveWaitsForAttribution(t *testing.T) {
	a := &ledger.Account{ActID: 5}
	redeemed := grant(5, "lobby", 1, tokens.StageFormal, "cash", 10)
	redeemed.LeaseID = 0
	book(t, a, redeemed, 1)
	for rain := uint64(2); rain <= 2*ledger.ChunkEntries+10; rain++ {
		book(t, a, grant(5, "lobby", rain, tokens.StageFormal, "cash", 1), 1)
	}
	if a.Archived != 0 {
		t.Fatalf("archived %d with an entry awaiting attribution", a.Archived)
	}
	event := grant(5, "lobby", 1, tokens.StageFormal, "cash", 10)
	if !a.Attribute(&event) {
		t.Fatal("attribution refused")
	}
	book(t, a, grant(5, "lobby", 1000, tokens.StageFormal, "cash", 1), 1)
	if a.Archived != ledger.ChunkEntries {
		t.Fatalf("archived %d after the attribution, want %d", a.Archived, ledger.ChunkEntries)
	}
}
