package ledger_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

// sampleGrants covers every field at ordinary and extreme values.
func sampleGrants() []ledger.Grant {
	g0 := grant(1, "lobby", 1, tokens.StageFormal, "cash", 88)
	g1 := grant(math.MaxUint64, "hall", math.MaxUint64, tokens.StageInternal, "coupon", math.MaxInt64)
	g1.AppID, g1.Asset, g1.LeaseID = math.MaxUint32, "coupon", math.MaxUint64
	g1.OpenTime, g1.IssuedAt = math.MinInt64, math.MaxInt64
	g2 := ledger.Grant{Stage: tokens.StageGray, Amount: 1} // every string empty, every number zero
	g3 := grant(300, strings.Repeat("s", 1024), 1<<40, tokens.StageGray, "红包", 1)
	g3.UserID = "用户\x00\xff"
	g3.OpenTime, g3.IssuedAt = -1, -1
	g4 := grant(42, "lobby", 1, tokens.StageFormal, "cash", 145) // from before keys named the activity
	g4.Legacy = true
	return []ledger.Grant{g0, g1, g2, g3, g4}
}

// checkTruncations asserts that decode refuses every strict prefix of enc
// and enc with a byte appended, all as ErrCorrupt.
func checkTruncations(t *testing.T, name string, enc []byte, decode func([]byte) error) {
	t.Helper()
	if err := decode(enc); err != nil {
		t.Fatalf("%s: decoding the valid encoding %x: %v", name, enc, err)
	}
	for i := range len(enc) {
		// A fresh copy, so that a decoder reading past len would be caught
		// by the race detector or a bounds check, not by luck.
		if err := decode(slices.Clone(enc[:i])); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("%s: decoding the first %d of %d bytes: %v, want ErrCorrupt", name, i, len(enc), err)
		}
	}
	for _, extra := range []byte{0, 1, 0xff} {
		if err := decode(append(slices.Clone(enc), extra)); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("%s: decoding with trailing byte %#x: %v, want ErrCorrupt", name, extra, err)
		}
	}
}

func TestGrantRecordRoundTrip(t *testing.T) {
	all := sampleGrants()
	for n := range len(all) + 1 {
		gs := all[:n]
		enc := ledger.AppendGrantRecord(nil, gs)
		got, err := ledger.DecodeGrantRecord(nil, enc)
		if err != nil {
			t.Fatalf("DecodeGrantRecord(AppendGrantRecord(%d grants)): %v", n, err)
		}
		if !slices.Equal(got, gs) {
			t.Errorf("DecodeGrantRecord(AppendGrantRecord(%+v)) = %+v", gs, got)
		}
		if re := ledger.AppendGrantRecord(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding %d grants: %x, want %x", n, re, enc)
		}
	}

	// Decoding appends to dst and leaves what was there.
	prefix := []ledger.Grant{grant(9, "x", 9, tokens.StageGray, "cash", 9)}
	enc := ledger.AppendGrantRecord([]byte("head"), all)
	if !bytes.HasPrefix(enc, []byte("head")) {
		t.Fatalf("AppendGrantRecord did not append to dst")
	}
	got, err := ledger.DecodeGrantRecord(slices.Clone(prefix), enc[len("head"):])
	if err != nil || !slices.Equal(got, append(slices.Clone(prefix), all...)) {
		t.Errorf("DecodeGrantRecord(prefix, ...) = %+v, %v, want prefix then the grants", got, err)
	}

	// A version 2 record (records on topics before version 3) refuses every
	// truncation; version 3's are in TestGrantRecordProtoTruncated.
	checkTruncations(t, "version 2 grant record", appendGrantRecordV2(nil, all), func(b []byte) error {
		got, err := ledger.DecodeGrantRecord(slices.Clone(prefix), b)
		if err != nil && !slices.Equal(got, prefix) {
			t.Errorf("DecodeGrantRecord(%x) failed with %v but returned %d grants, want dst unchanged", b, err, len(got))
		}
		return err
	})
}

// appendGrantRecordV2 appends a version 2 record, as nodes wrote them
// before version 3.
func appendGrantRecordV2(dst []byte, gs []ledger.Grant) []byte {
	dst = binary.AppendUvarint(append(dst, 2), uint64(len(gs)))
	for i := range gs {
		dst = ledger.AppendGrant(dst, &gs[i])
	}
	return dst
}

// TestDecodeGrantRecordRejects: corrupt version 1 and 2 records, and
// invalid grants in any version (version 3's own encoding faults are in
// TestDecodeGrantRecordProtoRejects).
func TestDecodeGrantRecordRejects(t *testing.T) {
	valid := grant(1, "lobby", 1, tokens.StageFormal, "cash", 88)
	record := func(mutate func(*ledger.Grant)) []byte {
		g := valid
		mutate(&g)
		return appendGrantRecordV2(nil, []ledger.Grant{g})
	}
	recordV3 := func(mutate func(*ledger.Grant)) []byte {
		g := valid
		mutate(&g)
		return ledger.AppendGrantRecord(nil, []ledger.Grant{g})
	}
	// A version 1 record of one grant hand-encoded up to its stage byte, for
	// fields AppendGrant cannot write wrongly; head2 the same as version 2
	// with the grant's key-format byte.
	head := func(appID uint64, stage byte) []byte {
		b := []byte{1, 1}
		b = binary.AppendUvarint(b, appID)
		b = append(b, 1, 0, 0, 0, 1) // act, user, activity, scene, rain
		return append(b, stage)
	}
	head2 := func(keys byte, appID uint64, stage byte) []byte {
		return append([]byte{2, 1, keys}, head(appID, stage)[2:]...)
	}
	tail := []byte{0, 0, 2, 0, 0, 0, 0} // award, asset, amount 1, budget, lease, open, issued

	tooMany := appendGrantRecordV2(nil, slices.Repeat([]ledger.Grant{valid}, ledger.GrantsPerRecordMax+1))
	longString := record(func(g *ledger.Grant) { g.SceneID = strings.Repeat("s", 1025) })

	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version 0", []byte{0, 0}},
		{"version 3", []byte{3, 0}},
		{"version 255", []byte{255, 0}},
		{"version 3 of a valid record", append([]byte{3}, record(func(*ledger.Grant) {})[1:]...)},
		{"count beyond bytes", []byte{1, 5, 0}},
		{"count beyond bytes, version 2", []byte{2, 5, 0}},
		{"count beyond max", tooMany},
		{"amount zero", record(func(g *ledger.Grant) { g.Amount = 0 })},
		{"amount zero, version 3", recordV3(func(g *ledger.Grant) { g.Amount = 0 })},
		{"amount negative, version 3", recordV3(func(g *ledger.Grant) { g.Amount = -1 })},
		{"amount min, version 3", recordV3(func(g *ledger.Grant) { g.Amount = math.MinInt64 })},
		{"stage out of range, version 3", recordV3(func(g *ledger.Grant) { g.Stage = tokens.StageInternal + 1 })},
		{"string over 1024, version 3", recordV3(func(g *ledger.Grant) { g.SceneID = strings.Repeat("s", 1025) })},
		{"amount negative", record(func(g *ledger.Grant) { g.Amount = -1 })},
		{"amount min", record(func(g *ledger.Grant) { g.Amount = math.MinInt64 })},
		{"stage out of range", record(func(g *ledger.Grant) { g.Stage = tokens.StageInternal + 1 })},
		{"string over 1024", longString},
		{"app_id over uint32", append(head(1<<32, 0), tail...)},
		{"stage 255", append(head(7, 255), tail...)},
		{"padded varint", append(append([]byte{1, 1, 0x87, 0x00}, head(7, 0)[3:]...), tail...)},
		{"padded count", append([]byte{2, 0x81, 0x00}, record(func(*ledger.Grant) {})[2:]...)},
		{"key format 2", append(head2(2, 7, 0), tail...)},
		{"key format 255", append(head2(255, 7, 0), tail...)},
		{"key format missing", []byte{2, 1}},
		// A version 2 grant in a version 1 record, and the reverse: the key
		// byte shifts every field.
		{"version 2 grant under version 1", append([]byte{1}, record(func(*ledger.Grant) {})[1:]...)},
		{"version 1 grant under version 2", append([]byte{2}, append(head(7, 0), tail...)[1:]...)},
	} {
		got, err := ledger.DecodeGrantRecord(nil, tc.b)
		if !errors.Is(err, ledger.ErrCorrupt) || len(got) != 0 {
			t.Errorf("%s: DecodeGrantRecord(%.40x) = %d grants, %v, want none, ErrCorrupt", tc.name, tc.b, len(got), err)
		}
	}
	// The hand encoder itself is right: with valid fields it decodes, and
	// each key format gives its keys.
	if gs, err := ledger.DecodeGrantRecord(nil, append(head(7, 2), tail...)); err != nil || len(gs) != 1 || !gs[0].Legacy {
		t.Errorf("hand-encoded valid version 1 grant: %+v, %v, want one Legacy grant", gs, err)
	}
	for _, keys := range []byte{0, 1} {
		if gs, err := ledger.DecodeGrantRecord(nil, append(head2(keys, 7, 2), tail...)); err != nil || len(gs) != 1 || gs[0].Legacy != (keys == 1) {
			t.Errorf("hand-encoded valid version 2 grant of key format %d: %+v, %v", keys, gs, err)
		}
	}
	// Exactly the maximum is fine.
	for _, maxRec := range [][]byte{appendGrantRecordV2(nil, slices.Repeat([]ledger.Grant{valid}, ledger.GrantsPerRecordMax)),
		ledger.AppendGrantRecord(nil, slices.Repeat([]ledger.Grant{valid}, ledger.GrantsPerRecordMax))} {
		if got, err := ledger.DecodeGrantRecord(nil, maxRec); err != nil || len(got) != ledger.GrantsPerRecordMax {
			t.Errorf("record of GrantsPerRecordMax grants, version %d: %d, %v", maxRec[0], len(got), err)
		}
	}
}

// legacyRecord is a grant record written by the code of version 1, before
// keys named the activity: user 42's cash packet of activity newyear in
// scene lobby, rain 1 (the packet of the tokens package's legacy token).
const legacyRecord = "0101012a04752d3432076e657779656172056c6f626279010004636173680463617368a202136e6577796561722f666f726d616c2f63617368038080a2beec68a493a2beec68"

// legacyRecordV3 is legacyRecord's grant in a version 3 record: protobuf
// redrain.v1.GrantRecord, version 3, one grant of 82 bytes (0x52).
const legacyRecordV3 = "080312520801102a1a04752d343222076e6577796561722a056c6f62627930014204636173684a04636173685091015a136e6577796561722f666f726d616c2f636173686003688080919fb63470d289919fb6347801"

func legacyRecordGrant() ledger.Grant {
	return ledger.Grant{AppID: 1, ActID: 42, UserID: "u-42", ActivityID: "newyear", SceneID: "lobby",
		RainID: 1, Stage: tokens.StageFormal, AwardType: "cash", Asset: ledger.AssetCash, Amount: 145,
		BudgetID: "newyear/formal/cash", LeaseID: 3, OpenTime: 1801267200000, IssuedAt: 1801267201234}
}

// TestGrantRecordLegacy decodes a record written before keys named the
// activity: its grant keeps the legacy keys and trade number through every
// later encoding, and grants of both formats have pinned encodings.
func TestGrantRecordLegacy(t *testing.T) {
	b, err := hex.DecodeString(legacyRecord)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := ledger.DecodeGrantRecord(nil, b)
	if err != nil {
		t.Fatalf("DecodeGrantRecord(legacy record): %v", err)
	}
	want := legacyRecordGrant()
	want.Legacy = true
	if len(gs) != 1 || gs[0] != want {
		t.Fatalf("DecodeGrantRecord(legacy record) = %+v, want [%+v]", gs, want)
	}
	g := gs[0]
	if k := g.LimitKey(); k != "42_lobby_1_formal" {
		t.Errorf("legacy LimitKey() = %q, want %q", k, "42_lobby_1_formal")
	}
	if k := g.IdempotencyKey(); k != "42_lobby_1_cash_formal" {
		t.Errorf("legacy IdempotencyKey() = %q, want %q", k, "42_lobby_1_cash_formal")
	}
	// The trade number of the version 1 token of the same packet.
	if otn := g.OutTradeNo(); otn != "7a11250c3bbbe791df8705d25e7ed375" {
		t.Errorf("legacy OutTradeNo() = %q, want %q", otn, "7a11250c3bbbe791df8705d25e7ed375")
	}
	if c := g.Claims(); !c.Legacy || c.LimitKey() != g.LimitKey() || c.IdempotencyKey() != g.IdempotencyKey() {
		t.Errorf("legacy Claims() = %+v, want Legacy claims with the grant's keys", c)
	}
	// Re-encoded (a fenced record, a version 1 journal) it still says
	// legacy: as version 2 in its key-format byte, as version 3 in
	// legacy_keys (field 15, the grant's last bytes 0x78 0x01).
	re2 := appendGrantRecordV2(nil, gs)
	if wantHex := "020101" + legacyRecord[4:]; hex.EncodeToString(re2) != wantHex {
		t.Errorf("legacy record re-encoded as version 2 = %x, want %s", re2, wantHex)
	}
	re := ledger.AppendGrantRecord(nil, gs)
	if hex.EncodeToString(re) != legacyRecordV3 {
		t.Errorf("legacy record re-encoded = %x, want %s", re, legacyRecordV3)
	}
	for _, b := range [][]byte{re2, re} {
		if again, err := ledger.DecodeGrantRecord(nil, b); err != nil || len(again) != 1 || again[0] != want {
			t.Errorf("decoding the re-encoded legacy record %x = %+v, %v, want [%+v]", b, again, err, want)
		}
	}
	// The same packet issued now: keys name the activity.
	cur := legacyRecordGrant()
	if wantHex := "020100" + legacyRecord[4:]; hex.EncodeToString(appendGrantRecordV2(nil, []ledger.Grant{cur})) != wantHex {
		t.Errorf("version 2 record of a current grant = %x, want %s", appendGrantRecordV2(nil, []ledger.Grant{cur}), wantHex)
	}
	// Version 3: no legacy_keys field, a grant of 80 bytes (0x50).
	if wantHex := "08031250" + strings.TrimSuffix(legacyRecordV3[8:], "7801"); hex.EncodeToString(ledger.AppendGrantRecord(nil, []ledger.Grant{cur})) != wantHex {
		t.Errorf("record of a current grant = %x, want %s", ledger.AppendGrantRecord(nil, []ledger.Grant{cur}), wantHex)
	}
	if k := cur.LimitKey(); k != "42_newyear_lobby_1_formal" {
		t.Errorf("LimitKey() = %q, want %q", k, "42_newyear_lobby_1_formal")
	}
	if k := cur.IdempotencyKey(); k != "42_newyear_lobby_1_cash_formal" || cur.OutTradeNo() != tokens.OutTradeNo(k) || cur.OutTradeNo() == g.OutTradeNo() {
		t.Errorf("IdempotencyKey() = %q (out_trade_no %s), want %q and a trade number other than the legacy one", k, cur.OutTradeNo(), "42_newyear_lobby_1_cash_formal")
	}
}

// TestLegacyGrantBooksOnce: a legacy grant redelivered after the upgrade
// finds the entry it was booked under before it, and books nothing; a
// redeem of its version 1 token (lease 0) is attributed by its legacy event.
func TestLegacyGrantBooksOnce(t *testing.T) {
	b, err := hex.DecodeString(legacyRecord)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := ledger.DecodeGrantRecord(nil, b)
	if err != nil || len(gs) != 1 {
		t.Fatalf("DecodeGrantRecord(legacy record) = %+v, %v", gs, err)
	}
	legacy := gs[0]

	// The account as the code of version 1 left it: the entry under the
	// legacy limit key, stored and read back.
	before := &ledger.Account{ActID: 42}
	old := legacyRecordGrant()
	old.Legacy = true
	if ok, err := before.Book(&old, 1000); !ok || err != nil {
		t.Fatalf("Book(legacy grant) = %v, %v", ok, err)
	}
	stored := ledger.MarshalAccount(nil, before)
	a, err := ledger.UnmarshalAccount(stored)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := a.Entry("42_lobby_1_formal"); !ok || e.TradeNo() != "7a11250c3bbbe791df8705d25e7ed375" || e.Amount != 145 {
		t.Fatalf("Entry(42_lobby_1_formal) = %+v, %v, want the legacy packet", e, ok)
	}
	// Redelivered, directly and after the round trip through the grains'
	// encoding.
	again, err := ledger.DecodeGrantRecord(nil, ledger.AppendGrantRecord(nil, gs))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []ledger.Grant{legacy, again[0]} {
		if ok, err := a.Book(&g, 2000); ok || err != nil {
			t.Errorf("Book(redelivered legacy grant) = %v, %v, want false, nil", ok, err)
		}
	}
	if got := a.Balance(ledger.AssetCash); got != 145 || len(a.Entries) != 1 {
		t.Errorf("after redelivery: cash %d in %d entries, want 145 in 1", got, len(a.Entries))
	}
	if err := a.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}

	// A version 1 token redeemed after the upgrade (lease 0), then its
	// version 1 event: attributed, not booked twice.
	r := &ledger.Account{ActID: 42}
	redeem := legacy
	redeem.LeaseID, redeem.UserID = 0, ""
	if ok, err := r.Book(&redeem, 1000); !ok || err != nil {
		t.Fatalf("Book(legacy redeem) = %v, %v", ok, err)
	}
	if ok, err := r.Book(&legacy, 2000); ok || err != nil {
		t.Errorf("Book(legacy event after redeem) = %v, %v, want false, nil", ok, err)
	}
	if !r.Attribute(&legacy) {
		t.Errorf("Attribute(legacy event) = false, want the redeemed entry attributed to lease 3")
	}
	if e, _ := r.Entry(legacy.LimitKey()); e.LeaseID != 3 || len(r.Entries) != 1 {
		t.Errorf("entry after attribution = %+v (%d entries), want lease 3 and one entry", e, len(r.Entries))
	}
}

// sampleAccount books grants in three assets, out of asset order.
func sampleAccount(t testing.TB) *ledger.Account {
	a := &ledger.Account{ActID: 42, Version: 17}
	for i, spec := range []struct {
		asset  ledger.Asset
		amount int64
	}{{"coin:zeta", 5}, {ledger.AssetCash, 88}, {"coin:alpha", 1}, {ledger.AssetCash, 12}, {"coin:zeta", math.MaxInt64 - 5}} {
		g := grant(42, "lobby", uint64(i+1), tokens.StageFormal, "cash", spec.amount)
		g.Asset = spec.asset
		if ok, err := a.Book(&g, int64(1000+i)); !ok || err != nil {
			t.Fatalf("Book(%+v) = %v, %v", g, ok, err)
		}
	}
	return a
}

func TestAccountRoundTrip(t *testing.T) {
	for _, a := range []*ledger.Account{
		{},
		{ActID: math.MaxUint64, Version: math.MaxUint64},
		sampleAccount(t),
	} {
		enc := ledger.MarshalAccount(nil, a)
		got, err := ledger.UnmarshalAccount(enc)
		if err != nil {
			t.Fatalf("UnmarshalAccount(MarshalAccount(%+v)): %v", a, err)
		}
		if got.ActID != a.ActID || got.Version != a.Version ||
			!slices.Equal(got.Balances, a.Balances) || !slices.Equal(got.Entries, a.Entries) || !slices.Equal(got.Months, a.Months) {
			t.Errorf("UnmarshalAccount(MarshalAccount(%+v)) = %+v", a, got)
		}
		if re := ledger.MarshalAccount(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding account %d: %x, want %x", a.ActID, re, enc)
		}
		// The decoded account must work, not only look right: its limit
		// index is rebuilt.
		for _, e := range a.Entries {
			if got, ok := got.Entry(e.LimitKey); !ok || got != e {
				t.Errorf("decoded account: Entry(%q) = %+v, %v, want %+v", e.LimitKey, got, ok, e)
			}
		}
		checkTruncations(t, "account", enc, func(b []byte) error {
			got, err := ledger.UnmarshalAccount(b)
			if (err == nil) != (got != nil) {
				t.Errorf("UnmarshalAccount(%x) = %v, %v", b, got, err)
			}
			return err
		})
	}
}

func TestUnmarshalAccountRejects(t *testing.T) {
	a := sampleAccount(t)
	enc := ledger.MarshalAccount(nil, a)

	tampered := a.Clone()
	tampered.Balances[0].Amount++
	// A second cash entry under an existing limit key, with the cash balance
	// raised to match, so that only the uniqueness check can catch it.
	dupKey := a.Clone()
	dupKey.Entries = append(dupKey.Entries, dupKey.Entries[1])
	if dupKey.Balances[0].Asset != ledger.AssetCash || dupKey.Entries[1].Asset != ledger.AssetCash {
		t.Fatalf("sample account changed: %+v", dupKey)
	}
	dupKey.Balances[0].Amount += dupKey.Entries[1].Amount

	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ledger.ErrCorrupt},
		{"version 5", append([]byte{5}, enc[1:]...), ledger.ErrCorrupt},
		{"padded act id", append([]byte{1, 0xaa, 0x00}, enc[2:]...), ledger.ErrCorrupt},
		{"balance count beyond bytes", []byte{1, 0, 0, 9}, ledger.ErrCorrupt},
		{"tampered balance", ledger.MarshalAccount(nil, tampered), ledger.ErrInvariant},
		{"duplicate limit key", ledger.MarshalAccount(nil, dupKey), ledger.ErrInvariant},
	} {
		got, err := ledger.UnmarshalAccount(tc.b)
		if !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: UnmarshalAccount(%.40x) = %v, %v, want nil, %v", tc.name, tc.b, got, err, tc.want)
		}
	}
}

func TestBudgetRoundTrip(t *testing.T) {
	for _, b := range []*ledger.Budget{
		{},
		{ID: "spring-cash", Asset: ledger.AssetCash, Total: 1_000_000, Leased: 700_000, Returned: 50_000,
			Folded: 600_000, FoldedCount: 9_000, FoldedUnattributed: 300, FoldedUnattributedCount: 2, NextLease: 12, Version: 99},
		{ID: strings.Repeat("b", 1024), Asset: "coupon", Total: math.MaxInt64, Leased: math.MaxInt64,
			Returned: 1, Folded: math.MaxInt64 - 1, FoldedCount: math.MaxInt64, NextLease: math.MaxUint64, Version: math.MaxUint64},
	} {
		enc := ledger.MarshalBudget(nil, b)
		got, err := ledger.UnmarshalBudget(enc)
		if err != nil || *got != *b {
			t.Fatalf("UnmarshalBudget(MarshalBudget(%+v)) = %+v, %v", b, got, err)
		}
		if re := ledger.MarshalBudget(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding budget: %x, want %x", re, enc)
		}
		checkTruncations(t, "budget", enc, func(b []byte) error { _, err := ledger.UnmarshalBudget(b); return err })
	}
	over := &ledger.Budget{ID: "b", Total: 10, Leased: 11}
	if got, err := ledger.UnmarshalBudget(ledger.MarshalBudget(nil, over)); !errors.Is(err, ledger.ErrInvariant) || got != nil {
		t.Errorf("UnmarshalBudget(overspent %+v) = %v, %v, want nil, ErrInvariant", over, got, err)
	}
}

func TestLeaseRoundTrip(t *testing.T) {
	for _, l := range []*ledger.Lease{
		{BudgetID: "spring-cash", ID: 3, Amount: 5_000, Owner: "node-1", Incarnation: 1_700_000_000_000},
		{BudgetID: "spring-cash", ID: 4, Amount: 5_000, Owner: "node-2", Incarnation: 2, Closed: true, Issued: 4_321, IssuedCount: 50},
		{BudgetID: "spring-cash", ID: 5, Amount: 5_000, Owner: "node-2", Incarnation: 2, Booked: 5_000, BookedCount: 70},
		{BudgetID: "spring-cash", ID: 6, Amount: 5_000, Owner: "node-2", Incarnation: 2, Closed: true, Issued: 4_321, IssuedCount: 50, Booked: 4_000, BookedCount: 44},
		{BudgetID: "b", ID: math.MaxUint64, Amount: math.MaxInt64, Owner: "", Incarnation: math.MaxUint64,
			Closed: true, Issued: math.MaxInt64, IssuedCount: math.MaxInt64},
		{BudgetID: "b", Amount: 1, Closed: true},
		{BudgetID: "b", ID: 7, Amount: 9, Owner: "n", Incarnation: 3, Expires: 1_798_761_600_000},
	} {
		enc := ledger.MarshalLease(nil, l)
		got, err := ledger.UnmarshalLease(enc)
		if err != nil || *got != *l {
			t.Fatalf("UnmarshalLease(MarshalLease(%+v)) = %+v, %v", l, got, err)
		}
		if re := ledger.MarshalLease(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding lease: %x, want %x", re, enc)
		}
		checkTruncations(t, "lease", enc, func(b []byte) error { _, err := ledger.UnmarshalLease(b); return err })
	}

	open := ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", ID: 1, Amount: 10, Owner: "n"})
	closedAt := len(open) - 6 // closed, issued, issued_count, booked, booked_count, expires (all 0)
	badClosed := slices.Clone(open)
	badClosed[closedAt] = 2
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"closed byte 2", badClosed, ledger.ErrCorrupt},
		{"version 0", append([]byte{0}, open[1:]...), ledger.ErrCorrupt},
		{"amount zero", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b"}), ledger.ErrInvariant},
		{"issued over amount", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Closed: true, Issued: 6}), ledger.ErrInvariant},
		{"issued negative", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Closed: true, Issued: -1}), ledger.ErrInvariant},
		{"count negative", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Closed: true, IssuedCount: -1}), ledger.ErrInvariant},
		{"open with issued", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Issued: 1}), ledger.ErrInvariant},
		{"booked over amount", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Booked: 6}), ledger.ErrInvariant},
		{"booked negative", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Booked: -1}), ledger.ErrInvariant},
		{"booked count negative", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, BookedCount: -1}), ledger.ErrInvariant},
		{"closed booked over issued", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Closed: true, Issued: 3, IssuedCount: 1, Booked: 4, BookedCount: 1}), ledger.ErrInvariant},
		{"closed booked count over issued", ledger.MarshalLease(nil, &ledger.Lease{BudgetID: "b", Amount: 5, Closed: true, Issued: 3, IssuedCount: 1, Booked: 3, BookedCount: 2}), ledger.ErrInvariant},
		{"version 4", append([]byte{4}, open[1:]...), ledger.ErrCorrupt},
		// A version 1 record has no booked figures, a version 2 one no
		// expiry: with them they are trailing bytes.
		{"version 1 with booked", append([]byte{1}, open[1:]...), ledger.ErrCorrupt},
		{"version 2 with expiry", append([]byte{2}, open[1:]...), ledger.ErrCorrupt},
	} {
		got, err := ledger.UnmarshalLease(tc.b)
		if !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: UnmarshalLease(%x) = %+v, %v, want nil, %v", tc.name, tc.b, got, err, tc.want)
		}
	}
}

// TestRecordsBeforeFolding: budgets and leases written before folding
// existed (version 1, encoded here byte by byte) still decode, with zero
// fold figures, and re-encode in the current version.
func TestRecordsBeforeFolding(t *testing.T) {
	budgetV1 := []byte{1,
		1, 'b', 4, 'c', 'a', 's', 'h', // id, asset
		0xc8, 0x01, 0x50, 0x14, 0x0a, 0x04, // total 100, leased 40, returned 10, folded 5, folded count 2
		3, 9, // next lease, version
	}
	b, err := ledger.UnmarshalBudget(budgetV1)
	want := ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: 100, Leased: 40, Returned: 10, Folded: 5, FoldedCount: 2, NextLease: 3, Version: 9}
	if err != nil || *b != want {
		t.Fatalf("UnmarshalBudget(version 1) = %+v, %v, want %+v", b, err, want)
	}
	if enc := ledger.MarshalBudget(nil, b); enc[0] != 3 || !bytes.Equal(enc[1:len(enc)-3], budgetV1[1:]) || !bytes.Equal(enc[len(enc)-3:], []byte{0, 0, 0}) {
		t.Errorf("MarshalBudget of a version 1 budget = %x, want version 3 with zero unattributed and expired", enc)
	}
	checkTruncations(t, "budget v1", budgetV1, func(b []byte) error { _, err := ledger.UnmarshalBudget(b); return err })

	leaseV1 := []byte{1,
		1, 'b', 3, 0x14, // budget, id 3, amount 10
		1, 'n', 7, // owner, incarnation
		1, 0x08, 0x02, // closed, issued 4, issued count 1
	}
	l, err := ledger.UnmarshalLease(leaseV1)
	wantL := ledger.Lease{BudgetID: "b", ID: 3, Amount: 10, Owner: "n", Incarnation: 7, Closed: true, Issued: 4, IssuedCount: 1}
	if err != nil || *l != wantL {
		t.Fatalf("UnmarshalLease(version 1) = %+v, %v, want %+v", l, err, wantL)
	}
	if enc := ledger.MarshalLease(nil, l); enc[0] != 3 || !bytes.Equal(enc[1:len(enc)-3], leaseV1[1:]) || !bytes.Equal(enc[len(enc)-3:], []byte{0, 0, 0}) {
		t.Errorf("MarshalLease of a version 1 lease = %x, want version 3 with zero booked and no expiry", enc)
	}
	checkTruncations(t, "lease v1", leaseV1, func(b []byte) error { _, err := ledger.UnmarshalLease(b); return err })
}

func TestHotDetailRoundTrip(t *testing.T) {
	var h ledger.HotDetail
	for _, g := range []struct {
		lease  uint64
		amount int64
	}{{9, 100}, {2, 5}, {9, 1}, {math.MaxUint64, 7}, {0, 3}, {2, 2}} {
		gr := grant(1, "lobby", 1, tokens.StageFormal, "cash", g.amount)
		gr.LeaseID = g.lease
		if err := h.Add(&gr); err != nil {
			t.Fatalf("HotDetail.Add(%+v): %v", gr, err)
		}
	}
	// Attributing a grant that redeem booked first moves its amount off
	// lease 0: a use may be negative as long as the parts add up.
	moved := &ledger.HotDetail{BudgetID: "b", Leases: []ledger.LeaseUse{{LeaseID: 0, Amount: -5, Count: -1}, {LeaseID: 3, Amount: 5, Count: 1}}}
	for _, d := range []*ledger.HotDetail{{BudgetID: "empty"}, &h, moved} {
		enc := ledger.MarshalHotDetail(nil, d)
		got, err := ledger.UnmarshalHotDetail(enc)
		if err != nil || got.BudgetID != d.BudgetID || got.Amount != d.Amount || got.Count != d.Count ||
			!slices.Equal(got.Leases, d.Leases) {
			t.Fatalf("UnmarshalHotDetail(MarshalHotDetail(%+v)) = %+v, %v", d, got, err)
		}
		if re := ledger.MarshalHotDetail(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding hot detail: %x, want %x", re, enc)
		}
		checkTruncations(t, "hot detail", enc, func(b []byte) error { _, err := ledger.UnmarshalHotDetail(b); return err })
	}

	u := func(id uint64, amount, count int64) ledger.LeaseUse {
		return ledger.LeaseUse{LeaseID: id, Amount: amount, Count: count}
	}
	for _, tc := range []struct {
		name string
		h    ledger.HotDetail
	}{
		{"amount mismatch", ledger.HotDetail{BudgetID: "b", Amount: 10, Count: 2, Leases: []ledger.LeaseUse{u(1, 4, 1), u(2, 5, 1)}}},
		{"count mismatch", ledger.HotDetail{BudgetID: "b", Amount: 9, Count: 3, Leases: []ledger.LeaseUse{u(1, 4, 1), u(2, 5, 1)}}},
		{"unsorted", ledger.HotDetail{BudgetID: "b", Amount: 9, Count: 2, Leases: []ledger.LeaseUse{u(2, 4, 1), u(1, 5, 1)}}},
		{"duplicate lease", ledger.HotDetail{BudgetID: "b", Amount: 9, Count: 2, Leases: []ledger.LeaseUse{u(1, 4, 1), u(1, 5, 1)}}},
		// Parts that wrap around int64 back onto the total.
		{"wrapping parts", ledger.HotDetail{BudgetID: "b", Amount: 0, Count: 3, Leases: []ledger.LeaseUse{
			u(1, math.MaxInt64, 1), u(2, math.MaxInt64, 1), u(3, 2, 1)}}},
	} {
		got, err := ledger.UnmarshalHotDetail(ledger.MarshalHotDetail(nil, &tc.h))
		if !errors.Is(err, ledger.ErrInvariant) || got != nil {
			t.Errorf("%s: UnmarshalHotDetail(%+v) = %+v, %v, want nil, ErrInvariant", tc.name, tc.h, got, err)
		}
	}
}

// decodeChecked decodes the grant record b for a fuzz target and fails
// it on a result that breaks DecodeGrantRecord's contract: an error other
// than ErrCorrupt or with grants, more than GrantsPerRecordMax grants, a
// grant without a positive amount or with an unknown stage. ok says
// whether b decoded.
func decodeChecked(t *testing.T, b []byte) (gs []ledger.Grant, ok bool) {
	t.Helper()
	gs, err := ledger.DecodeGrantRecord(nil, b)
	if err != nil {
		if !errors.Is(err, ledger.ErrCorrupt) || len(gs) != 0 {
			t.Fatalf("DecodeGrantRecord(%x) = %d grants, %v: want no grants and ErrCorrupt", b, len(gs), err)
		}
		return nil, false
	}
	if len(gs) > ledger.GrantsPerRecordMax {
		t.Fatalf("DecodeGrantRecord(%x) accepted %d grants", b, len(gs))
	}
	for i := range gs {
		if gs[i].Amount <= 0 || gs[i].Stage > tokens.StageInternal {
			t.Fatalf("DecodeGrantRecord(%x) accepted grant %+v", b, gs[i])
		}
	}
	return gs, true
}

func FuzzDecodeGrantRecord(f *testing.F) {
	all := sampleGrants()
	for n := range len(all) + 1 {
		f.Add(ledger.AppendGrantRecord(nil, all[:n]))
		f.Add(appendGrantRecordV2(nil, all[:n]))
	}
	f.Add([]byte{1, 0x81, 0x00})
	f.Add([]byte{2, 0})
	f.Add([]byte{3, 0})
	if b, err := hex.DecodeString(legacyRecord); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		gs, ok := decodeChecked(t, b)
		if !ok {
			return
		}
		re := ledger.AppendGrantRecord(nil, gs)
		switch b[0] {
		case 1:
			for i := range gs {
				if !gs[i].Legacy {
					t.Fatalf("DecodeGrantRecord(%x): grant %d of a version 1 record is not Legacy", b, i)
				}
			}
			fallthrough
		case 2:
			// A version 1 or 2 record re-encodes as version 3, keeping its
			// grants and their legacy keys; as version 2 to its own bytes.
			again, err := ledger.DecodeGrantRecord(nil, re)
			if err != nil || !slices.Equal(again, gs) {
				t.Fatalf("DecodeGrantRecord(%x) re-encodes to %x, which decodes to %+v, %v", b, re, again, err)
			}
			if re2 := appendGrantRecordV2(nil, gs); b[0] == 2 && !bytes.Equal(re2, b) {
				t.Fatalf("DecodeGrantRecord(%x) re-encodes as version 2 to %x", b, re2)
			}
		default:
			if !bytes.Equal(re, b) {
				t.Fatalf("DecodeGrantRecord(%x) re-encodes to %x", b, re)
			}
		}
	})
}

func FuzzUnmarshalAccount(f *testing.F) {
	f.Add(ledger.MarshalAccount(nil, &ledger.Account{}))
	f.Add(ledger.MarshalAccount(nil, sampleAccount(f)))
	f.Add([]byte{1, 0x81, 0x00, 0, 0, 0})
	heavy := oddPage(f).Accounts[1] // archived entries: months written
	f.Add(ledger.MarshalAccount(nil, heavy))
	f.Add(ledger.MarshalAccountV2(nil, heavy))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ledger.UnmarshalAccount(b)
		if err != nil {
			if a != nil || !(errors.Is(err, ledger.ErrCorrupt) || errors.Is(err, ledger.ErrInvariant) || errors.Is(err, ledger.ErrOverflow)) {
				t.Fatalf("UnmarshalAccount(%x) = %v, %v", b, a, err)
			}
			return
		}
		if err := a.Check(); err != nil {
			t.Fatalf("UnmarshalAccount(%x) accepted an account failing Check: %v", b, err)
		}
		// Each version has one encoding of an account (an older one is
		// written again as the current version).
		re := ledger.MarshalAccount(nil, a)
		if b[0] == 2 {
			re = ledger.MarshalAccountV2(nil, a)
		}
		if b[0] != 1 && !bytes.Equal(re, b) {
			t.Fatalf("UnmarshalAccount(%x) re-encodes to %x", b, re)
		}
		back, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, a))
		if err != nil || !slices.Equal(back.Months, a.Months) || back.MonthsKnown() != a.MonthsKnown() {
			t.Fatalf("UnmarshalAccount(%x) re-encoded does not decode to itself: %+v, %v", b, back, err)
		}
	})
}
