package booking

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"redrain/ledger"
)

// accountOf is a valid account of id holding n booked grants.
func accountOf(t testing.TB, id uint64, n int) *ledger.Account {
	t.Helper()
	a := &ledger.Account{ActID: id, Version: uint64(n)}
	a.Bind(ledger.AppUser{AppID: 7, UserID: "u-1"})
	for i := range n {
		g := ledger.Grant{AppID: 7, ActID: id, ActivityID: "act", SceneID: "s", RainID: uint64(i + 1),
			AwardType: "coins", Asset: ledger.CoinAsset("gold"), Amount: int64(10 + i), BudgetID: "b", LeaseID: 3}
		if ok, err := a.Book(&g, 1_700_000_000_000+int64(i)); !ok || err != nil {
			t.Fatalf("Book(%d) = %v, %v", i, ok, err)
		}
	}
	return a
}

func TestReadWireRoundTrip(t *testing.T) {
	for _, r := range []readRequest{
		{part: 0, epoch: 1, seq: 1},
		{part: 5, epoch: 42, seq: 1 << 40, ids: []uint64{1, 300, 1 << 63}},
	} {
		got, err := decodeReadRequest(appendReadRequest(nil, &r))
		if err != nil {
			t.Fatalf("decodeReadRequest(%+v): %v", r, err)
		}
		if got.part != r.part || got.epoch != r.epoch || got.seq != r.seq || !slices.Equal(got.ids, r.ids) {
			t.Fatalf("decodeReadRequest(append(%+v)) = %+v", r, got)
		}
	}

	accounts := map[uint64]*ledger.Account{9: accountOf(t, 9, 3), 4: accountOf(t, 4, 1), 70: accountOf(t, 70, 0)}
	ids := []uint64{4, 9, 70, 71}
	status, got, err := decodeReadAnswer(appendReadAnswer(nil, readServed, accounts), ids)
	if err != nil || status != readServed {
		t.Fatalf("decodeReadAnswer(served) = %d, %v", status, err)
	}
	if len(got) != len(accounts) {
		t.Fatalf("decodeReadAnswer(served) = %d accounts, want %d", len(got), len(accounts))
	}
	for id, a := range accounts {
		if !bytes.Equal(ledger.MarshalAccount(nil, got[id]), ledger.MarshalAccount(nil, a)) {
			t.Fatalf("account %d = %+v, want %+v", id, got[id], a)
		}
	}
	for _, s := range []byte{readNotOwner, readBehind, readRefused} {
		status, got, err := decodeReadAnswer(appendReadAnswer(nil, s, accounts), ids)
		if err != nil || status != s || got != nil {
			t.Fatalf("decodeReadAnswer(status %d) = %d, %v, %v", s, status, got, err)
		}
	}
}

func TestReadWireRefuses(t *testing.T) {
	served := appendReadAnswer(nil, readServed, map[uint64]*ledger.Account{9: accountOf(t, 9, 2)})
	for _, c := range []struct {
		name string
		body []byte
		ids  []uint64
	}{
		{"empty", nil, []uint64{9}},
		{"other version", append([]byte{2}, served[1:]...), []uint64{9}},
		{"unknown status", []byte{readVersion, 9}, []uint64{9}},
		{"not asked for", served, []uint64{8}},
		{"more accounts than asked", served, nil},
		{"truncated", served[:len(served)-1], []uint64{9}},
		{"trailing", append(slices.Clone(served), 0), []uint64{9}},
	} {
		if _, _, err := decodeReadAnswer(c.body, c.ids); !errors.Is(err, errReadWire) {
			t.Errorf("decodeReadAnswer(%s) = %v, want errReadWire", c.name, err)
		}
	}
	req := appendReadRequest(nil, &readRequest{part: 1, epoch: 2, seq: 3, ids: []uint64{5}})
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"other version", append([]byte{2}, req[1:]...)},
		{"truncated", req[:len(req)-1]},
		{"trailing", append(slices.Clone(req), 0)},
		{"partition beyond int32", appendReadRequest(nil, &readRequest{part: -1})},
		{"too many ids", appendReadRequest(nil, &readRequest{ids: make([]uint64, readIDsMax+1)})},
	} {
		if _, err := decodeReadRequest(c.body); !errors.Is(err, errReadWire) {
			t.Errorf("decodeReadRequest(%s) = %v, want errReadWire", c.name, err)
		}
	}
}

// FuzzReadWire: any body decodes or errors, never panics, and what
// decodes encodes back to the same bytes.
func FuzzReadWire(f *testing.F) {
	f.Add(appendReadRequest(nil, &readRequest{part: 3, epoch: 2, seq: 9, ids: []uint64{1, 2, 3}}))
	f.Add(appendReadAnswer(nil, readServed, map[uint64]*ledger.Account{2: accountOf(f, 2, 2), 3: accountOf(f, 3, 0)}))
	f.Add(appendReadAnswer(nil, readBehind, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		if r, err := decodeReadRequest(body); err == nil {
			if again := appendReadRequest(nil, r); !bytes.Equal(again, body) {
				t.Fatalf("request %x decoded to %+v, which encodes as %x", body, r, again)
			}
		}
		status, accounts, err := decodeReadAnswer(body, []uint64{1, 2, 3})
		if err != nil {
			return
		}
		if again := appendReadAnswer(nil, status, accounts); status != readServed && !bytes.Equal(again, body) {
			t.Fatalf("answer %x decoded to status %d, which encodes as %x", body, status, again)
		}
		for id, a := range accounts {
			if id != a.ActID || a.Check() != nil {
				t.Fatalf("answer %x decoded account %d as %+v", body, id, a)
			}
		}
	})
}
