package ledger

import (
	"fmt"
	"slices"
)

// A partition's accounts are kept by the node that books the partition (its
// owner) and stored as a journal of committed changes plus pages that
// checkpoint many accounts at once (see the booking package). These are
// their encodings and the one function that applies a change, so that the
// owner, a reader replaying the journal and a writer that is not the owner
// all compute the same accounts.

// Kinds of journal operation.
const (
	OpBook      byte = 1 // a grant credited (Account.Book), its app identity bound
	OpAttribute byte = 2 // a redeemed entry attributed to its stream event's lease
	OpBind      byte = 3 // an app identity bound by an explicit bind
)

// Op is one change to one account.
type Op struct {
	Kind byte
	// Grant is the grant booked or attributed; OpBind uses only its AppID,
	// ActID and UserID.
	Grant Grant
}

// Apply makes op's change to a, whose ActID must be op's, and reports
// whether it changed a. at is the booking time (unix ms) entries record.
// The owner keeps the ops that changed an account; replaying them on the
// same state changes it the same way. An error leaves a unchanged.
func (op *Op) Apply(a *Account, at int64) (bool, error) {
	g := &op.Grant
	if g.ActID != a.ActID {
		return false, fmt.Errorf("%w: op for act %d applied to act %d", ErrInvariant, g.ActID, a.ActID)
	}
	var changed bool
	switch op.Kind {
	case OpBook:
		booked, err := a.Book(g, at)
		if err != nil {
			return false, err
		}
		changed = booked
	case OpAttribute:
		changed = a.Attribute(g)
	case OpBind:
		if g.UserID == "" {
			return false, fmt.Errorf("%w: bind without a user id", ErrInvariant)
		}
		return a.Bind(AppUser{AppID: g.AppID, UserID: g.UserID}), nil
	default:
		return false, fmt.Errorf("%w: op kind %d", ErrCorrupt, op.Kind)
	}
	// The identity a grant was issued under becomes durable with the
	// account (redeem does not know the app's user id; the stream event,
	// attributed later, does).
	if changed && g.UserID != "" {
		a.Bind(AppUser{AppID: g.AppID, UserID: g.UserID})
	}
	return changed, nil
}

// Journal is one committed change of a partition's accounts: the ops of one
// booking batch (or of one redeem or bind), in the order they applied.
type Journal struct {
	Seq      uint64 // Invariant: a partition's journals are numbered 1, 2, 3... without gaps
	BookedAt int64  // unix ms, the BookedAt of the entries it made
	// From and To are the grant topic offsets [From, To) the batch booked;
	// both zero for a journal that booked nothing from the stream.
	From, To int64
	Ops      []Op
}

const journalVersion = 1

// AppendJournal appends the encoding of j.
func AppendJournal(dst []byte, j *Journal) []byte {
	dst = append(dst, journalVersion)
	dst = appendUvarint(dst, j.Seq)
	dst = appendVarint(dst, j.BookedAt)
	dst = appendVarint(dst, j.From)
	dst = appendVarint(dst, j.To)
	dst = appendUvarint(dst, uint64(len(j.Ops)))
	for i := range j.Ops {
		dst = append(dst, j.Ops[i].Kind)
		dst = AppendGrant(dst, &j.Ops[i].Grant)
	}
	return dst
}

// DecodeJournal decodes what AppendJournal wrote.
func DecodeJournal(src []byte) (*Journal, error) {
	d := decoder{b: src}
	if v := d.byte1("version"); d.err == nil && v != journalVersion {
		return nil, fmt.Errorf("%w: journal version %d", ErrCorrupt, v)
	}
	j := &Journal{Seq: d.uvarint("seq"), BookedAt: d.varint("booked_at"), From: d.varint("from"), To: d.varint("to")}
	n := d.count("ops")
	j.Ops = make([]Op, n)
	for i := 0; i < n && d.err == nil; i++ {
		// An unknown kind is refused here, not first when the journal is
		// replayed: a reader skips the ops of accounts it does not read.
		switch j.Ops[i].Kind = d.byte1("op kind"); j.Ops[i].Kind {
		case OpBook, OpAttribute, OpBind:
		default:
			d.fail("op kind")
		}
		d.grantAny(&j.Ops[i].Grant)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if j.Seq == 0 || j.To < j.From {
		return nil, fmt.Errorf("%w: journal seq %d offsets [%d, %d)", ErrCorrupt, j.Seq, j.From, j.To)
	}
	return j, nil
}

// grantAny decodes a grant as AppendGrant wrote it. A bind's grant has no
// amount, so the positive-amount check of records does not apply here;
// Apply checks what each kind needs.
func (d *decoder) grantAny(g *Grant) {
	d.keyFormat(g)
	d.grantFields(g)
}

// PartState is the state of one grant topic partition's accounts: who owns
// them, how far the journal goes and how much of it the pages hold.
type PartState struct {
	// Epoch grows by one each time a node takes the partition over. Every
	// write of the partition's accounts rewrites this state in the same
	// transaction, so a writer whose epoch is stale (an owner paused past
	// a rebalance) conflicts or finds a newer epoch, and writes nothing.
	Epoch   uint64
	Owner   string // node id and incarnation of the epoch's owner, for operators
	NextSeq uint64 // the next journal's seq (the first is 1)
	Booked  int64  // the next grant topic offset to book
	// CkptSeq is how far every page of the partition reflects the journal:
	// an account is its page plus the journals after max(CkptSeq, page.Seq).
	CkptSeq uint64
	// Released says the epoch's owner gave the partition up cleanly: it
	// decides none of its grants any more and none of its records can
	// still land, so the next owner need not wait for them.
	Released bool
}

// Partition state versions: 2 added Released (a version 1 state is not
// released).
const (
	partStateVersion   = 2
	partStateVersionV1 = 1
)

// AppendPartState appends the encoding of s.
func AppendPartState(dst []byte, s *PartState) []byte {
	dst = append(dst, partStateVersion)
	dst = appendUvarint(dst, s.Epoch)
	dst = appendString(dst, s.Owner)
	dst = appendUvarint(dst, s.NextSeq)
	dst = appendVarint(dst, s.Booked)
	dst = appendUvarint(dst, s.CkptSeq)
	released := byte(0)
	if s.Released {
		released = 1
	}
	return append(dst, released)
}

// DecodePartState decodes what AppendPartState wrote, or a version 1 state.
func DecodePartState(src []byte) (*PartState, error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && v != partStateVersion && v != partStateVersionV1 {
		return nil, fmt.Errorf("%w: partition state version %d", ErrCorrupt, v)
	}
	s := &PartState{Epoch: d.uvarint("epoch"), Owner: d.string("owner"), NextSeq: d.uvarint("next_seq"),
		Booked: d.varint("booked"), CkptSeq: d.uvarint("ckpt_seq")}
	if v == partStateVersion {
		switch d.byte1("released") {
		case 0:
		case 1:
			s.Released = true
		default:
			d.fail("released")
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if s.NextSeq == 0 || s.CkptSeq >= s.NextSeq || s.Booked < 0 {
		return nil, fmt.Errorf("%w: partition state next %d checkpoint %d booked %d", ErrCorrupt, s.NextSeq, s.CkptSeq, s.Booked)
	}
	return s, nil
}

// Page is a checkpoint of the accounts of one range of act_ids within one
// partition.
type Page struct {
	Seq      uint64     // the last journal it reflects
	Accounts []*Account // Invariant: sorted by ActID, unique
}

const pageVersion = 1

// AppendPage appends the encoding of p.
func AppendPage(dst []byte, p *Page) []byte {
	dst = append(dst, pageVersion)
	dst = appendUvarint(dst, p.Seq)
	dst = appendUvarint(dst, uint64(len(p.Accounts)))
	var rec []byte
	for _, a := range p.Accounts {
		rec = MarshalAccount(rec[:0], a)
		dst = appendUvarint(dst, uint64(len(rec)))
		dst = append(dst, rec...)
	}
	return dst
}

// DecodePage decodes what AppendPage wrote and checks every account.
func DecodePage(src []byte) (*Page, error) {
	d := decoder{b: src}
	if v := d.byte1("version"); d.err == nil && v != pageVersion {
		return nil, fmt.Errorf("%w: page version %d", ErrCorrupt, v)
	}
	p := &Page{Seq: d.uvarint("seq")}
	n := d.count("accounts")
	p.Accounts = make([]*Account, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		size := d.count("account size")
		if d.err != nil {
			break
		}
		a, err := UnmarshalAccount(d.b[:size])
		if err != nil {
			return nil, err
		}
		d.b = d.b[size:]
		if k := len(p.Accounts); k > 0 && p.Accounts[k-1].ActID >= a.ActID {
			return nil, fmt.Errorf("%w: page accounts not sorted", ErrCorrupt)
		}
		p.Accounts = append(p.Accounts, a)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// Find returns the page's account of actID, or nil.
func (p *Page) Find(actID uint64) *Account {
	i, ok := slices.BinarySearchFunc(p.Accounts, actID, func(a *Account, id uint64) int {
		switch {
		case a.ActID < id:
			return -1
		case a.ActID > id:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return p.Accounts[i]
}
