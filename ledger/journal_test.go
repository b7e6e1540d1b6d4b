package ledger_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

// sampleJournals covers every op kind and every field at ordinary and
// extreme values.
func sampleJournals() []*ledger.Journal {
	var ops []ledger.Op
	for _, g := range sampleGrants() {
		ops = append(ops, ledger.Op{Kind: ledger.OpBook, Grant: g}, ledger.Op{Kind: ledger.OpAttribute, Grant: g})
	}
	// A bind's grant has no amount.
	ops = append(ops, ledger.Op{Kind: ledger.OpBind, Grant: ledger.Grant{AppID: 9, ActID: 5, UserID: "open-id"}})
	// Moves between grants: the act_id deltas run across both.
	for _, m := range sampleMoves() {
		ops = append(ops[:len(ops)-1], ledger.MoveOp(&m), ops[len(ops)-1])
	}
	return []*ledger.Journal{
		{Seq: 1},
		{Seq: 2, BookedAt: 1_700_000_000_000, From: 10, To: 12, Ops: ops[:1]},
		{Seq: math.MaxUint64, BookedAt: math.MinInt64, From: 0, To: math.MaxInt64, Ops: ops},
		{Seq: 7, BookedAt: -1, From: -5, To: -5, Ops: ops[len(ops)-1:]},
	}
}

func journalsEqual(a, b *ledger.Journal) bool {
	return a.Seq == b.Seq && a.BookedAt == b.BookedAt && a.From == b.From && a.To == b.To &&
		slices.EqualFunc(a.Ops, b.Ops, func(x, y ledger.Op) bool {
			if x.Kind != y.Kind || x.Grant != y.Grant || (x.Move == nil) != (y.Move == nil) {
				return false
			}
			return x.Move == nil || reflect.DeepEqual(*x.Move, *y.Move)
		})
}

func TestJournalRoundTrip(t *testing.T) {
	var tail ledger.TailDecoder // one for every journal: it reuses its ops
	for _, j := range sampleJournals() {
		enc := ledger.AppendJournal(nil, j)
		got, err := ledger.DecodeJournal(enc)
		if err != nil {
			t.Fatalf("DecodeJournal(AppendJournal(%+v)): %v", j, err)
		}
		if !journalsEqual(got, j) {
			t.Errorf("DecodeJournal(AppendJournal(%+v)) = %+v", j, got)
		}
		if re := ledger.AppendJournal(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding journal %d: %x, want %x", j.Seq, re, enc)
		}
		checkTruncations(t, "journal", enc, func(b []byte) error { _, err := ledger.DecodeJournal(b); return err })
		// Without user ids: the same journal but for them, and refused
		// where DecodeJournal refuses.
		lean, err := tail.Decode(enc)
		if err != nil {
			t.Fatalf("TailDecoder.Decode(journal %d): %v", j.Seq, err)
		}
		want := *got
		want.Ops = slices.Clone(got.Ops)
		for i := range want.Ops {
			want.Ops[i].Grant.UserID = ""
		}
		if !journalsEqual(lean, &want) {
			t.Errorf("TailDecoder.Decode(journal %d) = %+v, want %+v", j.Seq, lean, want)
		}
		checkTruncations(t, "journal", enc, func(b []byte) error { _, err := tail.Decode(b); return err })
	}
	// Appends to dst.
	if enc := ledger.AppendJournal([]byte("head"), sampleJournals()[1]); !bytes.HasPrefix(enc, []byte("head")) {
		t.Fatal("AppendJournal did not append to dst")
	}
}

// TestTailDecoderAllocations: a tail reader decodes a journal of many
// grants with a fixed number of allocations (its tables), none per grant.
func TestTailDecoderAllocations(t *testing.T) {
	j := &ledger.Journal{Seq: 4, BookedAt: 1_700_000_000_000, From: 10, To: 20}
	for i := range 500 {
		j.Ops = append(j.Ops, ledger.Op{Kind: ledger.OpBook, Grant: ledger.Grant{AppID: 7, ActID: uint64(1000 + i),
			UserID: "user-" + strings.Repeat("x", i%7), ActivityID: "newyear", SceneID: "lobby", RainID: 3,
			AwardType: "cash", Asset: ledger.AssetCash, Amount: int64(1 + i), BudgetID: "newyear/formal/cash", LeaseID: 2,
			IssuedAt: 1_700_000_000_000}})
	}
	enc := ledger.AppendJournal(nil, j)
	var tail ledger.TailDecoder
	if _, err := tail.Decode(enc); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := tail.Decode(enc); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 10 {
		t.Errorf("TailDecoder.Decode of %d grants: %.0f allocations, want at most 10", len(j.Ops), allocs)
	}
	full := testing.AllocsPerRun(5, func() {
		if _, err := ledger.DecodeJournal(enc); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%d grants: %.0f allocations by TailDecoder, %.0f by DecodeJournal", len(j.Ops), allocs, full)
}

func TestDecodeJournalRefusesCorrupt(t *testing.T) {
	valid := sampleJournals()[1]
	enc := func(mod func(j *ledger.Journal)) []byte {
		j := *valid
		j.Ops = slices.Clone(valid.Ops)
		mod(&j)
		return ledger.AppendJournal(nil, &j)
	}
	good := enc(func(*ledger.Journal) {})
	// The key-format byte of the op's shape: the first byte that differs
	// when the grant is a legacy one.
	legacy := enc(func(j *ledger.Journal) { j.Ops[0].Grant.Legacy = true })
	keyAt := slices.IndexFunc(good, func(byte) bool { return false })
	for i := range good {
		if good[i] != legacy[i] {
			keyAt = i
			break
		}
	}
	keyFormat2 := slices.Clone(good)
	keyFormat2[keyAt] = 2
	for name, b := range map[string][]byte{
		"empty":             nil,
		"version 0":         append([]byte{0}, good[1:]...),
		"version 3":         append([]byte{3}, good[1:]...),
		"seq 0":             enc(func(j *ledger.Journal) { j.Seq = 0 }),
		"offsets backwards": enc(func(j *ledger.Journal) { j.From, j.To = 12, 11 }),
		"op kind 0":         enc(func(j *ledger.Journal) { j.Ops[0].Kind = 0 }),
		"op kind 5":         enc(func(j *ledger.Journal) { j.Ops[0].Kind = 5 }),
		"invalid move": enc(func(j *ledger.Journal) {
			j.Ops[0] = ledger.MoveOp(&ledger.Move{ActID: 7, Kind: ledger.MoveConsume, Key: "k",
				Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: 5}}, Counter: "merchant/m"})
		}),
		"key format 2":    keyFormat2,
		"padded seq":      append([]byte{2, 0x82, 0x00}, good[2:]...),
		"v1 key format 2": bytes.Replace(appendJournalV1(nil, valid), []byte{ledger.OpBook, 0}, []byte{ledger.OpBook, 2}, 1),
		"v1 op count past end": append(appendJournalV1(nil, &ledger.Journal{Seq: 2, BookedAt: valid.BookedAt, From: 10, To: 12}),
			0x7f),
	} {
		if _, err := ledger.DecodeJournal(b); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodeJournal(%s: %x) = %v, want ErrCorrupt", name, b, err)
		}
	}
}

// A version 2 journal built by hand (seq 1, booked at 0, offsets [0, 0)),
// for what AppendJournal never writes.
func journalV2(strs []string, shapes [][]byte, ops [][]byte) []byte {
	b := []byte{2, 1, 0, 0, 0, byte(len(strs))}
	for _, s := range strs {
		b = append(append(b, byte(len(s))), s...)
	}
	b = append(b, byte(len(shapes)))
	for _, sh := range shapes {
		b = append(b, sh...)
	}
	b = append(b, byte(len(ops)))
	for _, op := range ops {
		b = append(b, op...)
	}
	return b
}

// shapeV2 is a shape of app 7, rain 1, stage formal, lease 3, open time 0
// whose five strings are refs (activity, scene, award, asset, budget).
func shapeV2(refs ...byte) []byte {
	return []byte{0, 7, refs[0], refs[1], 1, byte(tokens.StageFormal), refs[2], refs[3], refs[4], 3, 0}
}

// opV2 books 5 fen to act 1 (user "u") under shape sh.
func opV2(sh byte) []byte { return []byte{sh<<2 | ledger.OpBook, 2, 1, 'u', 10, 0} }

func TestDecodeJournalRefusesNonCanonicalTables(t *testing.T) {
	strs := []string{"a", "s", "cash", "coin", "b"}
	if j, err := ledger.DecodeJournal(journalV2(strs, [][]byte{shapeV2(0, 1, 2, 3, 4)}, [][]byte{opV2(0)})); err != nil ||
		len(j.Ops) != 1 || j.Ops[0].Grant.ActID != 1 || j.Ops[0].Grant.BudgetID != "b" || j.Ops[0].Grant.Amount != 5 {
		t.Fatalf("DecodeJournal(a hand-built journal) = %+v, %v", j, err)
	}
	for name, b := range map[string][]byte{
		"string twice":       journalV2([]string{"a", "a"}, [][]byte{shapeV2(0, 1, 0, 0, 0)}, [][]byte{opV2(0)}),
		"string unused":      journalV2(append(strs, "x"), [][]byte{shapeV2(0, 1, 2, 3, 4)}, [][]byte{opV2(0)}),
		"strings out of use": journalV2(strs, [][]byte{shapeV2(1, 0, 2, 3, 4)}, [][]byte{opV2(0)}),
		"string past table":  journalV2(strs, [][]byte{shapeV2(0, 1, 2, 3, 5)}, [][]byte{opV2(0)}),
		"shape twice":        journalV2(strs, [][]byte{shapeV2(0, 1, 2, 3, 4), shapeV2(0, 1, 2, 3, 4)}, [][]byte{opV2(0), opV2(1)}),
		"shape unused":       journalV2(strs, [][]byte{shapeV2(0, 1, 2, 3, 4), shapeV2(0, 1, 2, 4, 3)}, [][]byte{opV2(0)}),
		"shapes out of use":  journalV2(strs, [][]byte{shapeV2(0, 1, 2, 3, 4), shapeV2(0, 1, 2, 4, 3)}, [][]byte{opV2(1), opV2(0)}),
		"shape past table":   journalV2(strs, [][]byte{shapeV2(0, 1, 2, 3, 4)}, [][]byte{opV2(0), opV2(1)}),
		"stage past internal": journalV2(strs, [][]byte{func() []byte {
			sh := shapeV2(0, 1, 2, 3, 4)
			sh[5] = byte(tokens.StageInternal) + 1
			return sh
		}()}, [][]byte{opV2(0)}),
	} {
		if _, err := ledger.DecodeJournal(b); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodeJournal(%s: %x) = %v, want ErrCorrupt", name, b, err)
		}
	}
}

// appendJournalV1 is AppendJournal as it was before version 2: each op's
// whole grant.
func appendJournalV1(dst []byte, j *ledger.Journal) []byte {
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, j.Seq)
	dst = binary.AppendVarint(dst, j.BookedAt)
	dst = binary.AppendVarint(dst, j.From)
	dst = binary.AppendVarint(dst, j.To)
	dst = binary.AppendUvarint(dst, uint64(len(j.Ops)))
	for i := range j.Ops {
		dst = append(dst, j.Ops[i].Kind)
		dst = ledger.AppendGrant(dst, &j.Ops[i].Grant)
	}
	return dst
}

// appendPageV1 is AppendPage as it was before version 2: each account as
// MarshalAccount encodes it, behind its length.
func appendPageV1(dst []byte, p *ledger.Page) []byte {
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, p.Seq)
	dst = binary.AppendUvarint(dst, uint64(len(p.Accounts)))
	var rec []byte
	for _, a := range p.Accounts {
		rec = ledger.MarshalAccountV2(rec[:0], a) // what version 1 pages held
		dst = binary.AppendUvarint(dst, uint64(len(rec)))
		dst = append(dst, rec...)
	}
	return dst
}

// goldenJournal and goldenPage are goldenJournalV1Value() and samplePage
// as the version 1 encoders wrote them (before version 2), kept as bytes
// so that a change to the version 1 decoders, or to the helpers above,
// cannot pass unseen.
const (
	goldenJournalV1 = "0105e8a7abfef9621418030100070102753106737072696e67056c6f626279010004636173680463617368b0010b737072696e672d636173680380a0abfef962f6a1abfef9620201072a0375343206737072696e67056c6f626279010004636173680463617368a2020b737072696e672d636173680380a0abfef962f6a1abfef96203000905076f70656e2d69640000000000000000000000"
	goldenPageV1    = "010903080201000000000000b103022a11030463617368c8010a636f696e3a616c7068610209636f696e3a7a657461feffffffffffffffff01051834325f737072696e675f6c6f6262795f315f666f726d616c203835306162303730376566656132653530356333373033386531356137316434046361736809636f696e3a7a6574610ad00f031834325f737072696e675f6c6f6262795f325f666f726d616c20303630653131353230373530326538656637666139613362333530663038626304636173680463617368b001d20f031834325f737072696e675f6c6f6262795f335f666f726d616c20363461313733303535316161343632623361633336316563346464343431363404636173680a636f696e3a616c70686102d40f031834325f737072696e675f6c6f6262795f345f666f726d616c2062353335353231313235656432613130366536306462623931666235396137660463617368046361736818d60f031834325f737072696e675f6c6f6262795f355f666f726d616c203433643734343333643138663430393636323961383634393331663136303231046361736809636f696e3a7a657461f4ffffffffffffffff01d80f030000000b022b010000010301750000"
)

func goldenJournalV1Value() *ledger.Journal {
	g := grant(1, "lobby", 1, tokens.StageFormal, "cash", 88)
	g4 := grant(42, "lobby", 1, tokens.StageFormal, "cash", 145)
	g4.Legacy = true
	return &ledger.Journal{Seq: 5, BookedAt: 1_700_000_000_500, From: 10, To: 12, Ops: []ledger.Op{
		{Kind: ledger.OpBook, Grant: g}, {Kind: ledger.OpAttribute, Grant: g4},
		{Kind: ledger.OpBind, Grant: ledger.Grant{AppID: 9, ActID: 5, UserID: "open-id"}}}}
}

// Journals and pages in the store written before version 2 stay readable,
// and what they decode to is written again as version 2.
func TestVersion1StillDecodes(t *testing.T) {
	raw, _ := hex.DecodeString(goldenJournalV1)
	if want := appendJournalV1(nil, goldenJournalV1Value()); !bytes.Equal(raw, want) {
		t.Fatalf("appendJournalV1 = %x, want the golden %x", want, raw)
	}
	js := append(sampleJournals(), goldenJournalV1Value())
	for _, j := range js {
		// Version 1 predates moves.
		j.Ops = slices.DeleteFunc(slices.Clone(j.Ops), func(op ledger.Op) bool { return op.Kind == ledger.OpMove })
		v1 := appendJournalV1(nil, j)
		got, err := ledger.DecodeJournal(v1)
		if err != nil || !journalsEqual(got, j) {
			t.Fatalf("DecodeJournal(version 1 %x) = %+v, %v, want %+v", v1, got, err, j)
		}
		v2 := ledger.AppendJournal(nil, got)
		if v2[0] != 2 || (len(j.Ops) > 1 && len(v2) >= len(v1)) {
			t.Errorf("journal %d: version 2 takes %d bytes (version byte %d), version 1 %d", j.Seq, len(v2), v2[0], len(v1))
		}
		checkTruncations(t, "version 1 journal", v1, func(b []byte) error { _, err := ledger.DecodeJournal(b); return err })
	}

	raw, _ = hex.DecodeString(goldenPageV1)
	p := samplePage(t)
	if want := appendPageV1(nil, p); !bytes.Equal(raw, want) {
		t.Fatalf("appendPageV1 = %x, want the golden %x", want, raw)
	}
	for _, p := range []*ledger.Page{{Seq: 1}, p} {
		v1 := appendPageV1(nil, p)
		got, err := ledger.DecodePage(v1)
		if err != nil {
			t.Fatalf("DecodePage(version 1 %x): %v", v1, err)
		}
		checkPage(t, got, p)
		v4 := ledger.AppendPage(nil, got)
		if v4[0] != 4 || (len(p.Accounts) > 0 && len(v4) >= len(v1)) {
			t.Errorf("page: version 4 takes %d bytes (version byte %d), version 1 %d", len(v4), v4[0], len(v1))
		}
		checkTruncations(t, "version 1 page", v1, func(b []byte) error { _, err := ledger.DecodePage(b); return err })
	}
}

// checkPage fails unless got holds want's accounts.
func checkPage(t *testing.T, got, want *ledger.Page) {
	t.Helper()
	if got.Seq != want.Seq || len(got.Accounts) != len(want.Accounts) {
		t.Fatalf("page = %+v, want %+v", got, want)
	}
	for i, a := range want.Accounts {
		g := got.Accounts[i]
		if !bytes.Equal(ledger.MarshalAccount(nil, g), ledger.MarshalAccount(nil, a)) ||
			!slices.Equal(g.Months, a.Months) || g.MonthsKnown() != a.MonthsKnown() {
			t.Fatalf("page account %d = %+v, want %+v", i, got.Accounts[i], a)
		}
	}
}

func TestPartStateRoundTrip(t *testing.T) {
	for _, s := range []*ledger.PartState{
		{NextSeq: 1},
		{Epoch: 3, Owner: "node-a/7", NextSeq: 18, Booked: 4096, CkptSeq: 16},
		{Epoch: 4, Owner: "node-b/8@127.0.0.1:4100", NextSeq: 19, Booked: 4097, CkptSeq: 16, Released: true},
		{Epoch: math.MaxUint64, Owner: strings.Repeat("o", 1024), NextSeq: math.MaxUint64, Booked: math.MaxInt64, CkptSeq: math.MaxUint64 - 1},
		{Epoch: 5, NextSeq: 20, Booked: 5000, Fences: []ledger.Fence{{BudgetID: "a/formal/cash", LeaseID: 3, From: 4000, At: 1_800_000_000_000},
			{BudgetID: "a/formal/cash", LeaseID: 9, From: 4999}, {BudgetID: "b/formal/cash", LeaseID: 1, From: 0}}},
	} {
		enc := ledger.AppendPartState(nil, s)
		got, err := ledger.DecodePartState(enc)
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Fatalf("DecodePartState(AppendPartState(%+v)) = %+v, %v", s, got, err)
		}
		if re := ledger.AppendPartState(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding %+v: %x, want %x", s, re, enc)
		}
		checkTruncations(t, "partition state", enc, func(b []byte) error { _, err := ledger.DecodePartState(b); return err })
	}
	for _, s := range []*ledger.PartState{
		{},                       // next seq 0: the first journal is 1
		{NextSeq: 5, CkptSeq: 5}, // a checkpoint past the journal
		{NextSeq: 5, CkptSeq: 9},
		{NextSeq: 1, Booked: -1}, // a negative offset
		{NextSeq: 1, Owner: strings.Repeat("o", 1025)},                                                 // past the string bound
		{NextSeq: 1, Fences: []ledger.Fence{{BudgetID: "b", LeaseID: 2}, {BudgetID: "b", LeaseID: 1}}}, // out of order
		{NextSeq: 1, Fences: []ledger.Fence{{BudgetID: "b", LeaseID: 2}, {BudgetID: "b", LeaseID: 2}}}, // twice
		{NextSeq: 1, Fences: []ledger.Fence{{BudgetID: "b", LeaseID: 0}}},                              // lease 0
		{NextSeq: 1, Fences: []ledger.Fence{{BudgetID: "b", LeaseID: 1, From: -1}}},                    // a negative offset
	} {
		if got, err := ledger.DecodePartState(ledger.AppendPartState(nil, s)); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodePartState(AppendPartState(%+v)) = %+v, %v, want ErrCorrupt", s, got, err)
		}
	}
	if _, err := ledger.DecodePartState([]byte{4, 0, 0, 1, 0, 0, 0, 0}); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePartState(version 4) = %v, want ErrCorrupt", err)
	}
	// A version 2 state has no fences.
	if got, err := ledger.DecodePartState([]byte{2, 3, 0, 18, 0x80, 0x40, 16, 1}); err != nil ||
		!reflect.DeepEqual(got, &ledger.PartState{Epoch: 3, NextSeq: 18, Booked: 4096, CkptSeq: 16, Released: true}) {
		t.Errorf("DecodePartState(version 2) = %+v, %v", got, err)
	}
	if _, err := ledger.DecodePartState([]byte{2, 0, 0, 1, 0, 0, 2}); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePartState(released = 2) = %v, want ErrCorrupt", err)
	}
	// A state written before Released existed (version 1) is not released.
	if got, err := ledger.DecodePartState([]byte{1, 3, 0, 18, 0x80, 0x40, 16}); err != nil || !reflect.DeepEqual(got, &ledger.PartState{Epoch: 3, NextSeq: 18, Booked: 4096, CkptSeq: 16}) {
		t.Errorf("DecodePartState(version 1) = %+v, %v", got, err)
	}
}

// samplePage holds three accounts in act_id order.
func samplePage(t testing.TB) *ledger.Page {
	a := sampleAccount(t)
	b := &ledger.Account{ActID: a.ActID + 1, Version: 1}
	b.Bind(ledger.AppUser{AppID: 3, UserID: "u"})
	return &ledger.Page{Seq: 9, Accounts: []*ledger.Account{{ActID: 1}, a, b}}
}

func TestPageRoundTrip(t *testing.T) {
	for _, p := range []*ledger.Page{{Seq: 1}, {Seq: math.MaxUint64, Accounts: []*ledger.Account{{}}}, samplePage(t), oddPage(t)} {
		enc := ledger.AppendPage(nil, p)
		got, err := ledger.DecodePage(enc)
		if err != nil {
			t.Fatalf("DecodePage(AppendPage(%+v)): %v", p, err)
		}
		checkPage(t, got, p)
		if re := ledger.AppendPage(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding page: %x, want %x", re, enc)
		}
		checkTruncations(t, "page", enc, func(b []byte) error { _, err := ledger.DecodePage(b); return err })
		// Version 3, as a node before derived trade numbers wrote it,
		// decodes to the same accounts.
		v3 := ledger.AppendPageV3(nil, p)
		if got, err := ledger.DecodePage(v3); err != nil || v3[0] != 3 {
			t.Fatalf("DecodePage(AppendPageV3(%+v)) = %v (version byte %d)", p, err, v3[0])
		} else {
			checkPage(t, got, p)
		}
	}

	p := samplePage(t)
	for _, a := range p.Accounts {
		if got := p.Find(a.ActID); got != a {
			t.Errorf("Find(%d) = %+v, want %+v", a.ActID, got, a)
		}
	}
	if got := p.Find(p.Accounts[1].ActID + 100); got != nil {
		t.Errorf("Find of an act_id the page does not hold = %+v", got)
	}
}

// oddPage holds entries whose limit keys and out_trade_nos are not in the
// forms version 2 shortens, an account with an archived chunk, and act_ids
// at both ends of their range.
func oddPage(t testing.TB) *ledger.Page {
	a := &ledger.Account{ActID: 0, Version: 1}
	a.Entries = []ledger.Entry{
		{LimitKey: "legacy", OutTradeNo: strings.Repeat("A", 32), AwardType: "cash", Asset: "cash", Amount: 1, BookedAt: math.MinInt64},
		{LimitKey: "0_", OutTradeNo: strings.Repeat("f", 31), AwardType: "", Asset: "", Amount: 2, BookedAt: math.MaxInt64, LeaseID: math.MaxUint64},
		{LimitKey: "00_x", OutTradeNo: "", AwardType: "cash", Asset: "cash", Amount: math.MaxInt64 - 2},
		{LimitKey: "0_x", OutTradeNo: strings.Repeat("g", 32), Asset: "cash", Amount: 1},
		// Lowercase hex but for the last digit, just past a range's end.
		{LimitKey: "0_y", OutTradeNo: strings.Repeat("a", 31) + "`", Asset: "", Amount: 1},
		{LimitKey: "0_z", OutTradeNo: strings.Repeat("9", 31) + ":", Asset: "", Amount: 1},
	}
	a.Balances = []ledger.Balance{{Asset: "", Amount: 4}, {Asset: "cash", Amount: math.MaxInt64}}
	var err error
	if a.Months, err = ledger.MonthsOf(a.Entries); err != nil {
		t.Fatalf("oddPage: %v", err)
	}
	if err := a.Check(); err != nil {
		t.Fatalf("oddPage: %v", err)
	}
	b := &ledger.Account{ActID: 7, Version: 3}
	var gs []ledger.Grant
	for i := range ledger.ChunkEntries * 2 {
		g := grant(7, "lobby", uint64(i+1), tokens.StageFormal, "cash", 1)
		gs = append(gs, g)
	}
	for i := range gs {
		if ok, err := b.Book(&gs[i], int64(i)); !ok || err != nil {
			t.Fatalf("Book: %v, %v", ok, err)
		}
	}
	if b.Archived == 0 {
		t.Fatal("oddPage: nothing archived")
	}
	c := &ledger.Account{ActID: math.MaxUint64}
	return &ledger.Page{Seq: 3, Accounts: []*ledger.Account{a, b, c}}
}

func TestDecodePageRefusesCorrupt(t *testing.T) {
	p := samplePage(t)
	unsorted := &ledger.Page{Seq: 1, Accounts: []*ledger.Account{p.Accounts[2], p.Accounts[1]}}
	dup := &ledger.Page{Seq: 1, Accounts: []*ledger.Account{p.Accounts[1], p.Accounts[1]}}
	for name, pg := range map[string]*ledger.Page{"unsorted": unsorted, "duplicate act_id": dup} {
		if _, err := ledger.DecodePage(ledger.AppendPage(nil, pg)); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodePage(%s) = %v, want ErrCorrupt", name, err)
		}
		if _, err := ledger.DecodePage(appendPageV1(nil, pg)); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodePage(version 1 %s) = %v, want ErrCorrupt", name, err)
		}
	}
	good := ledger.AppendPage(nil, p)
	if _, err := ledger.DecodePage(append([]byte{5}, good[1:]...)); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePage(version 5) = %v, want ErrCorrupt", err)
	}
	// A version 1 account's length that takes in the next account's first
	// byte.
	v1 := appendPageV1(nil, p)
	first := ledger.MarshalAccount(nil, p.Accounts[0])
	if v1[3] != byte(len(first)) {
		t.Fatalf("page layout: %x", v1)
	}
	long := slices.Clone(v1)
	long[3]++
	if _, err := ledger.DecodePage(long); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePage(account length one too long) = %v, want ErrCorrupt", err)
	}
	// An account that fails its money checks is a broken invariant.
	bad := sampleAccount(t)
	bad.Balances[0].Amount++
	for name, enc := range map[string]func([]byte, *ledger.Page) []byte{"": ledger.AppendPage, "version 1 ": appendPageV1} {
		if _, err := ledger.DecodePage(enc(nil, &ledger.Page{Seq: 1, Accounts: []*ledger.Account{bad}})); !errors.Is(err, ledger.ErrInvariant) {
			t.Errorf("DecodePage(%san account whose balance is not its entries) = %v, want ErrInvariant", name, err)
		}
	}
}

// pageV2 is a version 2 page built by hand (seq 1): its strings, then
// its accounts.
func pageV2(strs []string, accounts ...[]byte) []byte {
	b := []byte{2, 1, byte(len(strs))}
	for _, s := range strs {
		b = append(append(b, byte(len(s))), s...)
	}
	b = append(b, byte(len(accounts)))
	for _, a := range accounts {
		b = append(b, a...)
	}
	return b
}

// accountV2 is an account of a hand-built page: act_id delta, version 1,
// a balance of 3 in string 0 and one entry (a booking of 3 in string 0,
// award string 0, at time 0 under lease 1, after e's flags, limit key and
// out_trade_no), no apps, nothing archived.
func accountV2(delta byte, e []byte) []byte {
	b := append([]byte{delta, 1, 1, 0, 6, 1}, e...)
	return append(b, 0, 0, 6, 0, 1, 0, 0, 0)
}

func TestDecodePageRefusesNonCanonical(t *testing.T) {
	hex16 := bytes.Repeat([]byte{0xab}, 16)
	entry := func(flags, key byte, otn []byte) []byte { return append([]byte{flags, key}, otn...) }
	text := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	strs := []string{"cash", "r"}
	if p, err := ledger.DecodePage(pageV2(strs, accountV2(5, entry(3, 1, hex16)))); err != nil ||
		p.Accounts[0].Entries[0].LimitKey != "5_r" || p.Accounts[0].Entries[0].OutTradeNo != strings.Repeat("ab", 16) {
		t.Fatalf("DecodePage(a hand-built page) = %+v, %v", p, err)
	}
	emptyAccount := []byte{0, 1, 0, 0, 0, 0, 0} // act_id delta 0
	for name, b := range map[string][]byte{
		"limit key with its act prefix": pageV2([]string{"cash", "5_r"}, accountV2(5, entry(2, 1, hex16))),
		"out_trade_no in hex as text":   pageV2(strs, accountV2(5, entry(1, 1, text(strings.Repeat("ab", 16))))),
		"unknown entry flag":            pageV2(strs, accountV2(5, entry(7, 1, hex16))),
		"out_trade_no bytes cut short":  pageV2(strs, accountV2(5, entry(3, 1, hex16[:15]))),
		"string twice":                  pageV2([]string{"cash", "r", "r"}, accountV2(5, entry(3, 1, hex16))),
		"string unused":                 pageV2([]string{"cash", "r", "x"}, accountV2(5, entry(3, 1, hex16))),
		"strings out of use":            pageV2([]string{"cash", "x", "r"}, accountV2(5, entry(3, 2, hex16))),
		"string past table":             pageV2(strs, accountV2(5, entry(3, 2, hex16))),
		"the same act_id twice":         pageV2(strs, accountV2(5, entry(3, 1, hex16)), emptyAccount),
	} {
		if _, err := ledger.DecodePage(b); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodePage(%s: %x) = %v, want ErrCorrupt", name, b, err)
		}
	}
	emptyAccount[0] = 1
	if _, err := ledger.DecodePage(pageV2(strs, accountV2(5, entry(3, 1, hex16)), emptyAccount)); err != nil {
		t.Errorf("DecodePage(two accounts): %v", err)
	}
}

func FuzzDecodeJournal(f *testing.F) {
	for _, j := range append(sampleJournals(), goldenJournalV1Value()) {
		f.Add(ledger.AppendJournal(nil, j))
		f.Add(appendJournalV1(nil, j))
	}
	f.Add([]byte{1, 1, 0, 0, 0, 1, 9, 0})
	f.Add(journalV2([]string{"a", "s", "cash", "coin", "b"}, [][]byte{shapeV2(0, 1, 2, 3, 4)}, [][]byte{opV2(0)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := ledger.DecodeJournal(b)
		if err != nil {
			if j != nil || !errors.Is(err, ledger.ErrCorrupt) {
				t.Fatalf("DecodeJournal(%x) = %+v, %v: want nil and ErrCorrupt", b, j, err)
			}
			return
		}
		if j.Seq == 0 || j.To < j.From {
			t.Fatalf("DecodeJournal(%x) accepted %+v", b, j)
		}
		for _, op := range j.Ops {
			if op.Kind != ledger.OpBook && op.Kind != ledger.OpAttribute && op.Kind != ledger.OpBind && op.Kind != ledger.OpMove {
				t.Fatalf("DecodeJournal(%x) accepted op kind %d", b, op.Kind)
			}
			if op.Kind == ledger.OpMove && (op.Move == nil || op.Move.Validate() != nil || op.Move.ActID != op.Grant.ActID) {
				t.Fatalf("DecodeJournal(%x) accepted move %+v", b, op.Move)
			}
		}
		// A version 2 journal has one encoding; a version 1 one is written
		// again as version 2, which decodes to the same journal.
		re := ledger.AppendJournal(nil, j)
		if b[0] == 2 && !bytes.Equal(re, b) {
			t.Fatalf("DecodeJournal(%x) re-encodes to %x", b, re)
		}
		if back, err := ledger.DecodeJournal(re); err != nil || !journalsEqual(back, j) {
			t.Fatalf("DecodeJournal(%x) = %+v, re-encoded to %x, which decodes to %+v, %v", b, j, re, back, err)
		}
	})
}

func FuzzDecodePartState(f *testing.F) {
	f.Add(ledger.AppendPartState(nil, &ledger.PartState{NextSeq: 1}))
	f.Add(ledger.AppendPartState(nil, &ledger.PartState{Epoch: 3, Owner: "node-a/7", NextSeq: 18, Booked: 4096, CkptSeq: 16}))
	f.Add([]byte{1, 0x81, 0x00, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ledger.DecodePartState(b)
		if err != nil {
			if s != nil || !errors.Is(err, ledger.ErrCorrupt) {
				t.Fatalf("DecodePartState(%x) = %+v, %v: want nil and ErrCorrupt", b, s, err)
			}
			return
		}
		if s.NextSeq == 0 || s.CkptSeq >= s.NextSeq || s.Booked < 0 {
			t.Fatalf("DecodePartState(%x) accepted %+v", b, s)
		}
		if re := ledger.AppendPartState(nil, s); !bytes.Equal(re, b) {
			t.Fatalf("DecodePartState(%x) re-encodes to %x", b, re)
		}
	})
}

func FuzzDecodePage(f *testing.F) {
	f.Add(ledger.AppendPage(nil, &ledger.Page{Seq: 1}))
	f.Add(ledger.AppendPage(nil, samplePage(f)))
	f.Add(ledger.AppendPage(nil, oddPage(f)))
	f.Add(ledger.AppendPage(nil, movedPage(f)))
	f.Add(appendPageV1(nil, samplePage(f)))
	f.Add(ledger.AppendPageV2(nil, oddPage(f)))
	f.Add(ledger.AppendPageV3(nil, oddPage(f)))
	f.Add([]byte{1, 1, 1, 1, 0})
	f.Add(pageV2([]string{"cash", "r"}, accountV2(5, append([]byte{3, 1}, bytes.Repeat([]byte{0xab}, 16)...))))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ledger.DecodePage(b)
		if err != nil {
			if p != nil || !(errors.Is(err, ledger.ErrCorrupt) || errors.Is(err, ledger.ErrInvariant) || errors.Is(err, ledger.ErrOverflow)) {
				t.Fatalf("DecodePage(%x) = %+v, %v", b, p, err)
			}
			return
		}
		for i, a := range p.Accounts {
			if err := a.Check(); err != nil {
				t.Fatalf("DecodePage(%x) accepted an account failing Check: %v", b, err)
			}
			if i > 0 && p.Accounts[i-1].ActID >= a.ActID {
				t.Fatalf("DecodePage(%x) accepted accounts out of order", b)
			}
		}
		re := ledger.AppendPage(nil, p)
		if b[0] == 4 && !bytes.Equal(re, b) {
			t.Fatalf("DecodePage(%x) re-encodes to %x", b, re)
		}
		if v3 := ledger.AppendPageV3(nil, p); b[0] == 3 && !bytes.Equal(v3, b) {
			t.Fatalf("DecodePage(%x) re-encodes as version 3 to %x", b, v3)
		}
		if v2 := ledger.AppendPageV2(nil, p); b[0] == 2 && !bytes.Equal(v2, b) {
			t.Fatalf("DecodePage(%x) re-encodes as version 2 to %x", b, v2)
		}
		back, err := ledger.DecodePage(re)
		if err != nil {
			t.Fatalf("DecodePage(%x) re-encoded to %x: %v", b, re, err)
		}
		checkPage(t, back, p)
	})
}

// TestPageDerivesTradeNos: a version 4 page writes no out_trade_no for a
// booked grant's entry (new and legacy keys), 16 bytes and a flag fewer
// each than version 3; both decode to entries that hold none and derive
// the token's; a trade number that does not derive is kept whole; an
// entry that holds its derivable one whole encodes as the derived one; the
// account record still carries it whole (older nodes read it) and decodes
// to the same entry.
func TestPageDerivesTradeNos(t *testing.T) {
	var grants []ledger.Grant
	p := &ledger.Page{Seq: 4}
	for i := range 20 {
		a := &ledger.Account{ActID: uint64(100 + i), Version: 1}
		g := grant(a.ActID, "lobby", 1, tokens.StageFormal, "cash", int64(1+i))
		g.Legacy = i%5 == 0
		if ok, err := a.Book(&g, 1_700_000_000_000); !ok || err != nil {
			t.Fatalf("Book: %v, %v", ok, err)
		}
		grants = append(grants, g)
		p.Accounts = append(p.Accounts, a)
	}
	v4, v3 := ledger.AppendPage(nil, p), ledger.AppendPageV3(nil, p)
	if v4[0] != 4 || v3[0] != 3 || len(v3)-len(v4) != 16*len(grants) {
		t.Errorf("version 4 takes %d bytes, version 3 %d: want %d fewer", len(v4), len(v3), 16*len(grants))
	}
	for _, enc := range [][]byte{v4, v3} {
		got, err := ledger.DecodePage(enc)
		if err != nil {
			t.Fatalf("DecodePage(version %d): %v", enc[0], err)
		}
		for i, a := range got.Accounts {
			e := a.Entries[0]
			if !reflect.DeepEqual(a.Entries, p.Accounts[i].Entries) || e.OutTradeNo != "" || e.TradeNo() != grants[i].OutTradeNo() {
				t.Fatalf("version %d: entry %+v (trade number %s), want %+v deriving %s", enc[0], e, e.TradeNo(), p.Accounts[i].Entries[0], grants[i].OutTradeNo())
			}
		}
		if re := ledger.AppendPage(nil, got); !bytes.Equal(re, v4) {
			t.Errorf("version %d re-encoded: %x, want %x", enc[0], re, v4)
		}
	}

	// Whole where it derives: the same bytes as derived. Whole where it
	// does not: kept.
	whole := p.Accounts[1].Clone()
	whole.Entries[0].OutTradeNo = grants[1].OutTradeNo()
	other := p.Accounts[2].Clone()
	other.Entries[0].OutTradeNo = strings.Repeat("0f", 16)
	q := &ledger.Page{Seq: 4, Accounts: []*ledger.Account{whole, other}}
	if enc, want := ledger.AppendPage(nil, q), ledger.AppendPage(nil, &ledger.Page{Seq: 4, Accounts: []*ledger.Account{p.Accounts[1], other}}); !bytes.Equal(enc, want) {
		t.Errorf("a derivable trade number held whole encodes as %x, want %x", enc, want)
	}
	got, err := ledger.DecodePage(ledger.AppendPage(nil, q))
	if err != nil || got.Accounts[0].Entries[0].OutTradeNo != "" || got.Accounts[1].Entries[0].OutTradeNo != strings.Repeat("0f", 16) {
		t.Fatalf("DecodePage = %+v, %v", got, err)
	}

	rec := ledger.MarshalAccount(nil, p.Accounts[3])
	if !bytes.Contains(rec, []byte(grants[3].OutTradeNo())) {
		t.Errorf("account record %x does not carry the trade number %s", rec, grants[3].OutTradeNo())
	}
	if a, err := ledger.UnmarshalAccount(rec); err != nil || !reflect.DeepEqual(a.Entries, p.Accounts[3].Entries) {
		t.Errorf("UnmarshalAccount = %+v, %v, want entries %+v", a, err, p.Accounts[3].Entries)
	}
}

// TestDecodePageRefusesTradeNoForms: a derived trade number only in a
// version 4 page and only for a grant's entry, never beside written bytes;
// a grant's entry never with an empty one written; in version 4 never
// whole where it derives.
func TestDecodePageRefusesTradeNoForms(t *testing.T) {
	version := func(v byte, b []byte) []byte { b[0] = v; return b }
	entry := func(flags, key byte, otn []byte) []byte { return append([]byte{flags, key}, otn...) }
	strs := []string{"cash", "r"}
	const keyAct, hexOTN, derived = 1, 2, 8
	// "5_r" with award "cash" derives from "5_cash_r": a key whose last
	// part is the stage.
	otn, _ := tokens.OutTradeNoOfLimit("5_r", "cash")
	whole, _ := hex.DecodeString(otn)
	if p, err := ledger.DecodePage(version(4, pageV2(strs, accountV2(5, entry(keyAct|derived, 1, nil))))); err != nil ||
		p.Accounts[0].Entries[0].OutTradeNo != "" || p.Accounts[0].Entries[0].TradeNo() != otn {
		t.Fatalf("DecodePage(a hand-built version 4 page) = %+v, %v", p, err)
	}
	if p, err := ledger.DecodePage(version(3, pageV2(strs, accountV2(5, entry(keyAct|hexOTN, 1, whole))))); err != nil ||
		p.Accounts[0].Entries[0].OutTradeNo != "" {
		t.Fatalf("DecodePage(a version 3 page with a derivable trade number) = %+v, %v", p, err)
	}
	for name, b := range map[string][]byte{
		"derived in version 3":           version(3, pageV2(strs, accountV2(5, entry(keyAct|derived, 1, nil)))),
		"derived beside its bytes":       version(4, pageV2(strs, accountV2(5, entry(keyAct|derived|hexOTN, 1, whole)))),
		"derivable written whole":        version(4, pageV2(strs, accountV2(5, entry(keyAct|hexOTN, 1, whole)))),
		"empty in version 4":             version(4, pageV2(strs, accountV2(5, entry(keyAct, 1, []byte{0})))),
		"empty in version 3":             version(3, pageV2(strs, accountV2(5, entry(keyAct, 1, []byte{0})))),
		"derived from a key of one part": version(4, pageV2([]string{"cash", "r"}, accountV2(5, entry(derived, 1, nil)))),
	} {
		if _, err := ledger.DecodePage(b); !errors.Is(err, ledger.ErrCorrupt) && !errors.Is(err, ledger.ErrInvariant) {
			t.Errorf("DecodePage(%s: %x) = %v, want ErrCorrupt or ErrInvariant", name, b, err)
		}
	}
}
