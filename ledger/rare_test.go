package ledger_test

import (
	"fmt"
	"reflect"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

// TestAccountRareFieldsOnlyWhenHeld: an account with a few packets holds
// none of its rare fields (they sit behind one pointer); one that archived
// a chunk holds its archived keys there, its clone shares them, and both
// answer an archived limit key as booked.
func TestAccountRareFieldsOnlyWhenHeld(t *testing.T) {
	a := ledger.NewAccount(9)
	for i := range 3 {
		g := grant(9, "lobby", uint64(i+1), tokens.StageFormal, "cash", 5)
		if ok, err := a.Book(&g, 1_700_000_000_000+int64(i)); !ok || err != nil {
			t.Fatalf("book %d: %v, %v", i, ok, err)
		}
	}
	if a.HasRare() {
		t.Fatal("an account of 3 packets holds rare fields")
	}
	if c := a.Clone(); c.HasRare() || !reflect.DeepEqual(c, a) {
		t.Fatalf("clone of a small account: rare %v, equal %v", c.HasRare(), reflect.DeepEqual(c, a))
	}
	var first string
	for i := 3; i < 200; i++ {
		g := grant(9, fmt.Sprintf("scene-%d", i), uint64(i+1), tokens.StageFormal, "cash", 5)
		if i == 3 {
			first = g.LimitKey()
		}
		if ok, err := a.Book(&g, 1_700_000_000_000+int64(i)); !ok || err != nil {
			t.Fatalf("book %d: %v, %v", i, ok, err)
		}
		a.TakeSealed()
	}
	if a.Archived == 0 || !a.HasRare() || !a.ArchivedKeysLoaded() {
		t.Fatalf("after 200 packets: archived %d, rare %v, keys loaded %v", a.Archived, a.HasRare(), a.ArchivedKeysLoaded())
	}
	c := a.Clone()
	for _, acc := range []*ledger.Account{a, c} {
		if booked, err := acc.Booked(first); !booked || err != nil {
			t.Fatalf("an archived limit key: booked %v, %v", booked, err)
		}
	}
	if !c.HasRare() || !c.ArchivedKeysLoaded() {
		t.Fatalf("clone: rare %v, keys loaded %v", c.HasRare(), c.ArchivedKeysLoaded())
	}
}
