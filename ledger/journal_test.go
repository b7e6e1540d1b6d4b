package ledger_test

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"redrain/ledger"
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
	return []*ledger.Journal{
		{Seq: 1},
		{Seq: 2, BookedAt: 1_700_000_000_000, From: 10, To: 12, Ops: ops[:1]},
		{Seq: math.MaxUint64, BookedAt: math.MinInt64, From: 0, To: math.MaxInt64, Ops: ops},
		{Seq: 7, BookedAt: -1, From: -5, To: -5, Ops: ops[len(ops)-1:]},
	}
}

func journalsEqual(a, b *ledger.Journal) bool {
	return a.Seq == b.Seq && a.BookedAt == b.BookedAt && a.From == b.From && a.To == b.To && slices.Equal(a.Ops, b.Ops)
}

func TestJournalRoundTrip(t *testing.T) {
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
	}
	// Appends to dst.
	if enc := ledger.AppendJournal([]byte("head"), sampleJournals()[1]); !bytes.HasPrefix(enc, []byte("head")) {
		t.Fatal("AppendJournal did not append to dst")
	}
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
	for name, b := range map[string][]byte{
		"empty":             nil,
		"version 0":         append([]byte{0}, good[1:]...),
		"version 2":         append([]byte{2}, good[1:]...),
		"seq 0":             enc(func(j *ledger.Journal) { j.Seq = 0 }),
		"offsets backwards": enc(func(j *ledger.Journal) { j.From, j.To = 12, 11 }),
		"op kind 0":         enc(func(j *ledger.Journal) { j.Ops[0].Kind = 0 }),
		"op kind 4":         enc(func(j *ledger.Journal) { j.Ops[0].Kind = 4 }),
		"key format 2":      bytes.Replace(good, []byte{ledger.OpBook, 0}, []byte{ledger.OpBook, 2}, 1),
		"padded seq":        append([]byte{1, 0x82, 0x00}, good[2:]...),
		"op count past end": append(good[:len(good)-len(ledger.AppendGrant(nil, &valid.Ops[0].Grant))-2], 0x7f),
	} {
		if _, err := ledger.DecodeJournal(b); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodeJournal(%s: %x) = %v, want ErrCorrupt", name, b, err)
		}
	}
}

func TestPartStateRoundTrip(t *testing.T) {
	for _, s := range []*ledger.PartState{
		{NextSeq: 1},
		{Epoch: 3, Owner: "node-a/7", NextSeq: 18, Booked: 4096, CkptSeq: 16},
		{Epoch: 4, Owner: "node-b/8@127.0.0.1:4100", NextSeq: 19, Booked: 4097, CkptSeq: 16, Released: true},
		{Epoch: math.MaxUint64, Owner: strings.Repeat("o", 1024), NextSeq: math.MaxUint64, Booked: math.MaxInt64, CkptSeq: math.MaxUint64 - 1},
	} {
		enc := ledger.AppendPartState(nil, s)
		got, err := ledger.DecodePartState(enc)
		if err != nil || *got != *s {
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
		{NextSeq: 1, Owner: strings.Repeat("o", 1025)}, // past the string bound
	} {
		if got, err := ledger.DecodePartState(ledger.AppendPartState(nil, s)); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodePartState(AppendPartState(%+v)) = %+v, %v, want ErrCorrupt", s, got, err)
		}
	}
	if _, err := ledger.DecodePartState([]byte{3, 0, 0, 1, 0, 0, 0}); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePartState(version 3) = %v, want ErrCorrupt", err)
	}
	if _, err := ledger.DecodePartState([]byte{2, 0, 0, 1, 0, 0, 2}); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePartState(released = 2) = %v, want ErrCorrupt", err)
	}
	// A state written before Released existed (version 1) is not released.
	if got, err := ledger.DecodePartState([]byte{1, 3, 0, 18, 0x80, 0x40, 16}); err != nil || *got != (ledger.PartState{Epoch: 3, NextSeq: 18, Booked: 4096, CkptSeq: 16}) {
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
	for _, p := range []*ledger.Page{{Seq: 1}, {Seq: math.MaxUint64, Accounts: []*ledger.Account{{}}}, samplePage(t)} {
		enc := ledger.AppendPage(nil, p)
		got, err := ledger.DecodePage(enc)
		if err != nil {
			t.Fatalf("DecodePage(AppendPage(%+v)): %v", p, err)
		}
		if got.Seq != p.Seq || len(got.Accounts) != len(p.Accounts) {
			t.Fatalf("DecodePage(AppendPage(%+v)) = %+v", p, got)
		}
		for i, a := range p.Accounts {
			if !bytes.Equal(ledger.MarshalAccount(nil, got.Accounts[i]), ledger.MarshalAccount(nil, a)) {
				t.Fatalf("page account %d = %+v, want %+v", i, got.Accounts[i], a)
			}
		}
		if re := ledger.AppendPage(nil, got); !bytes.Equal(re, enc) {
			t.Errorf("re-encoding page: %x, want %x", re, enc)
		}
		checkTruncations(t, "page", enc, func(b []byte) error { _, err := ledger.DecodePage(b); return err })
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

func TestDecodePageRefusesCorrupt(t *testing.T) {
	p := samplePage(t)
	unsorted := &ledger.Page{Seq: 1, Accounts: []*ledger.Account{p.Accounts[2], p.Accounts[1]}}
	dup := &ledger.Page{Seq: 1, Accounts: []*ledger.Account{p.Accounts[1], p.Accounts[1]}}
	for name, pg := range map[string]*ledger.Page{"unsorted": unsorted, "duplicate act_id": dup} {
		if _, err := ledger.DecodePage(ledger.AppendPage(nil, pg)); !errors.Is(err, ledger.ErrCorrupt) {
			t.Errorf("DecodePage(%s) = %v, want ErrCorrupt", name, err)
		}
	}
	good := ledger.AppendPage(nil, p)
	if _, err := ledger.DecodePage(append([]byte{2}, good[1:]...)); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePage(version 2) = %v, want ErrCorrupt", err)
	}
	// An account's length that takes in the next account's first byte.
	first := ledger.MarshalAccount(nil, p.Accounts[0])
	if good[3] != byte(len(first)) {
		t.Fatalf("page layout: %x", good)
	}
	long := slices.Clone(good)
	long[3]++
	if _, err := ledger.DecodePage(long); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("DecodePage(account length one too long) = %v, want ErrCorrupt", err)
	}
	// An account that fails its money checks is a broken invariant.
	bad := sampleAccount(t)
	bad.Balances[0].Amount++
	if _, err := ledger.DecodePage(ledger.AppendPage(nil, &ledger.Page{Seq: 1, Accounts: []*ledger.Account{bad}})); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("DecodePage(an account whose balance is not its entries) = %v, want ErrInvariant", err)
	}
}

func FuzzDecodeJournal(f *testing.F) {
	for _, j := range sampleJournals() {
		f.Add(ledger.AppendJournal(nil, j))
	}
	f.Add([]byte{1, 1, 0, 0, 0, 1, 9, 0})
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
			if op.Kind != ledger.OpBook && op.Kind != ledger.OpAttribute && op.Kind != ledger.OpBind {
				t.Fatalf("DecodeJournal(%x) accepted op kind %d", b, op.Kind)
			}
		}
		if re := ledger.AppendJournal(nil, j); !bytes.Equal(re, b) {
			t.Fatalf("DecodeJournal(%x) re-encodes to %x", b, re)
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
	f.Add([]byte{1, 1, 1, 1, 0})
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
		if re := ledger.AppendPage(nil, p); !bytes.Equal(re, b) {
			t.Fatalf("DecodePage(%x) re-encodes to %x", b, re)
		}
	})
}
