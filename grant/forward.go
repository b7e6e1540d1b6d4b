package grant

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"redrain/ledger"
	"redrain/tokens"
)

// Peers carries batches to the nodes that own the shards this node does
// not: in a cluster one node decides each shard's users (the node whose
// booking owns the partition), and the others forward their batches for
// it, one message per batch.
type Peers interface {
	// Owner returns the forwarding address of shard p's owner as the store
	// names it ("" when none does yet).
	Owner(ctx context.Context, p int32) (string, error)
	// Forward sends a batch (AppendForward's encoding) to the node at addr
	// and returns its answer (Serve's).
	Forward(ctx context.Context, addr string, body []byte) ([]byte, error)
}

// Tenure is a node's hold on a shard's partition, as booking keeps it: the
// shard decides its users only while Valid.
type Tenure interface{ Valid() bool }

// ErrNotOwner answers a forwarded grant on a node that does not own its
// shard (any more): the sender asks the store for the owner again.
var ErrNotOwner = errors.New("grant: this node does not own the user's shard")

// errMoving answers grants whose shard has no owner that decides them now:
// booking is moving the partition, or its new owner is still catching up.
var errMoving = errors.New("grant: the user's shard is moving between nodes; retry")

// errLeaseExpired answers a grant whose record was acknowledged after its
// budget lease expired on this node (see leaseSafety).
var errLeaseExpired = errors.New("grant: the budget lease expired before the grant was acknowledged; retry")

// forwardTimeout bounds one forwarded batch. An owner answers in
// milliseconds; one that died is found out this long after, and the batch
// is answered unavailable (a retry that reaches the owner later gets the
// same packet).
const forwardTimeout = 5 * time.Second

// ownerRefreshMin spaces a shard's reads of its owner from the store.
const ownerRefreshMin = 50 * time.Millisecond

// Wire format of a forwarded batch, version 2 (a node answers another
// version unavailable, so nodes of different versions only refuse each
// other's batches):
//
//	request: 2, partition uvarint, then the strings the grants share (count
//	  uvarint, then each as uvarint length and bytes: activity and scene
//	  ids), then count uvarint and per grant: app_id uvarint, act_id
//	  uvarint, user_id (length and bytes), activity and scene as indexes
//	  into the strings, rain_id uvarint
//	answer:  2, the strings the answers share (award types, assets,
//	  budget ids), count uvarint, then per grant: outcome byte, flags byte
//	  (flagBooked, flagNotOwner, flagGrant, flagErr); with flagGrant what
//	  the owner decided: app_id uvarint, stage byte, award, asset and
//	  budget as string indexes, amount varint, lease_id uvarint, open_time
//	  and issued_at varint; with flagErr the error text
//
// The rest of a grant (act_id, the user, activity, scene and rain) is the
// sender's own. A decoder copies a message into one string and slices
// every string field out of it: one allocation per batch.
const forwardVersion = 2

const (
	flagBooked = 1 << iota
	flagNotOwner
	flagGrant
	flagErr
)

// forwardMax bounds the grants of one forwarded batch, and its strings: a
// shard never takes more than the node admits at once.
const forwardMax = InFlightMaxDefault * 4

// strTable numbers the distinct strings of one message in order of first
// use.
type strTable struct {
	index map[string]uint64
	list  []string
}

func (t *strTable) reset() {
	if t.index == nil {
		t.index = map[string]uint64{}
	}
	clear(t.index)
	clear(t.list)
	t.list = t.list[:0]
}

func (t *strTable) of(s string) uint64 {
	if i, ok := t.index[s]; ok {
		return i
	}
	i := uint64(len(t.list))
	t.index[s] = i
	t.list = append(t.list, s)
	return i
}

// appendHead appends the head of an answer: its kind (or version), the
// string table and the count of what follows.
func (t *strTable) appendHead(dst []byte, kind byte, n int) []byte {
	dst = append(dst, kind)
	dst = t.appendTo(dst)
	return binary.AppendUvarint(dst, uint64(n))
}

func (t *strTable) appendTo(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(t.list)))
	for _, s := range t.list {
		dst = appendStr(dst, s)
	}
	return dst
}

// AppendForward appends the encoding of a batch of grants for partition p:
// reqs[i] for the act_id ids[i].
func AppendForward(dst []byte, p int32, reqs []Request, ids []uint64) []byte {
	var t strTable
	t.reset()
	return appendForward(dst, &t, p, len(reqs), func(i int) (*Request, uint64) { return &reqs[i], ids[i] })
}

// appendForward encodes n grants, the i-th being at(i).
func appendForward(dst []byte, t *strTable, p int32, n int, at func(int) (*Request, uint64)) []byte {
	for i := range n {
		r, _ := at(i)
		t.of(r.ActivityID)
		t.of(r.SceneID)
	}
	dst = append(dst, forwardVersion)
	dst = binary.AppendUvarint(dst, uint64(p))
	dst = t.appendTo(dst)
	dst = binary.AppendUvarint(dst, uint64(n))
	for i := range n {
		r, actID := at(i)
		dst = binary.AppendUvarint(dst, uint64(r.AppID))
		dst = binary.AppendUvarint(dst, actID)
		dst = appendStr(dst, r.UserID)
		dst = binary.AppendUvarint(dst, t.of(r.ActivityID))
		dst = binary.AppendUvarint(dst, t.of(r.SceneID))
		dst = binary.AppendUvarint(dst, r.RainID)
	}
	return dst
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// reader reads the forwarding wire format; the first failure sticks.
// Strings are slices of all, one copy of the whole message.
type reader struct {
	all string
	off int
	err error
}

func newReader(src []byte) *reader { return &reader{all: string(src)} }

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("grant: forwarded batch: bad %s", what)
	}
}

func (r *reader) rest() int { return len(r.all) - r.off }

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if r.off >= len(r.all) || shift > 63 {
			r.fail(what)
			return 0
		}
		c := r.all[r.off]
		r.off++
		if shift == 63 && c > 1 {
			r.fail(what)
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
}

func (r *reader) varint(what string) int64 {
	u := r.uvarint(what)
	return int64(u>>1) ^ -int64(u&1)
}

func (r *reader) byte1(what string) byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.all) {
		r.fail(what)
		return 0
	}
	c := r.all[r.off]
	r.off++
	return c
}

func (r *reader) str(what string) string {
	n := r.uvarint(what)
	if r.err != nil {
		return ""
	}
	if n > uint64(r.rest()) {
		r.fail(what)
		return ""
	}
	s := r.all[r.off : r.off+int(n)]
	r.off += int(n)
	return s
}

func (r *reader) count(what string) int {
	n := r.uvarint(what)
	if n > forwardMax {
		r.fail(what)
		return 0
	}
	return int(n)
}

// table reads a message's string table.
func (r *reader) table() []string {
	n := r.count("string count")
	if r.err != nil || n > r.rest() { // each string takes a byte at least
		r.fail("string count")
		return nil
	}
	t := make([]string, 0, n)
	for range n {
		t = append(t, r.str("string"))
	}
	return t
}

func (r *reader) ref(t []string, what string) string {
	i := r.uvarint(what)
	if r.err != nil {
		return ""
	}
	if i >= uint64(len(t)) {
		r.fail(what)
		return ""
	}
	return t[i]
}

func (r *reader) version() {
	if v := r.byte1("version"); r.err == nil && v != forwardVersion {
		r.err = fmt.Errorf("grant: forwarded message version %d, want %d", v, forwardVersion)
	}
}

// DecodeForward decodes AppendForward's encoding.
func DecodeForward(src []byte) (p int32, reqs []Request, ids []uint64, err error) {
	r := newReader(src)
	r.version()
	part := r.uvarint("partition")
	if part > 1<<31-1 {
		r.fail("partition")
	}
	t := r.table()
	n := r.count("count")
	if r.err == nil && n > r.rest() {
		r.fail("count")
	}
	if r.err == nil {
		reqs, ids = make([]Request, 0, n), make([]uint64, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		app := r.uvarint("app_id")
		if app > 1<<32-1 {
			r.fail("app_id")
		}
		id := r.uvarint("act_id")
		req := Request{AppID: uint32(app), UserID: r.str("user_id"), ActivityID: r.ref(t, "activity_id"), SceneID: r.ref(t, "scene_id"), RainID: r.uvarint("rain_id")}
		if id == 0 {
			r.fail("act_id")
		}
		reqs, ids = append(reqs, req), append(ids, id)
	}
	if r.err == nil && r.rest() != 0 {
		r.fail("length")
	}
	if r.err != nil {
		return 0, nil, nil, r.err
	}
	return int32(part), reqs, ids, nil
}

// AppendAnswers appends the encoding of a forwarded batch's answers.
func AppendAnswers(dst []byte, res []Result) []byte {
	var t strTable
	t.reset()
	grant := func(r *Result) bool { return r.Outcome == Issued || r.Outcome == Repeat || r.Outcome == NoAward }
	for i := range res {
		if g := &res[i].Grant; grant(&res[i]) {
			t.of(g.AwardType)
			t.of(string(g.Asset))
			t.of(g.BudgetID)
		}
	}
	dst = t.appendHead(dst, forwardVersion, len(res))
	for i := range res {
		r := &res[i]
		var flags byte
		if r.Booked {
			flags |= flagBooked
		}
		if errors.Is(r.Err, ErrNotOwner) {
			flags |= flagNotOwner
		}
		if grant(r) {
			flags |= flagGrant
		}
		if r.Err != nil && flags&flagNotOwner == 0 {
			flags |= flagErr
		}
		dst = append(dst, byte(r.Outcome), flags)
		if flags&flagGrant != 0 {
			g := &r.Grant
			dst = binary.AppendUvarint(dst, uint64(g.AppID))
			dst = append(dst, byte(g.Stage))
			dst = binary.AppendUvarint(dst, t.of(g.AwardType))
			dst = binary.AppendUvarint(dst, t.of(string(g.Asset)))
			dst = binary.AppendUvarint(dst, t.of(g.BudgetID))
			dst = binary.AppendVarint(dst, g.Amount)
			dst = binary.AppendUvarint(dst, g.LeaseID)
			dst = binary.AppendVarint(dst, g.OpenTime)
			dst = binary.AppendVarint(dst, g.IssuedAt)
		}
		if flags&flagErr != 0 {
			dst = appendStr(dst, r.Err.Error())
		}
	}
	return dst
}

// remoteError is an error an owner answered for a forwarded grant.
type remoteError struct{ text string }

func (e *remoteError) Error() string { return e.text }

// DecodeAnswers decodes AppendAnswers's encoding into res, which has one
// entry per grant of the batch, each holding the grant as the sender built
// it (Result.Grant): the owner's decisions are written over it.
func DecodeAnswers(src []byte, res []Result) error {
	r := newReader(src)
	r.version()
	t := r.table()
	if n := r.count("count"); r.err == nil && n != len(res) {
		return fmt.Errorf("grant: %d forwarded answers for %d grants", n, len(res))
	}
	for i := 0; i < len(res) && r.err == nil; i++ {
		o, flags := Outcome(r.byte1("outcome")), r.byte1("flags")
		if o >= outcomeCount {
			r.fail("outcome")
		}
		g := res[i].Grant
		res[i] = Result{Outcome: o, Booked: flags&flagBooked != 0}
		if flags&flagGrant != 0 {
			app := r.uvarint("app_id")
			if app > 1<<32-1 {
				r.fail("app_id")
			}
			g.AppID = uint32(app)
			g.Stage = tokens.Stage(r.byte1("stage"))
			if g.Stage > tokens.StageInternal {
				r.fail("stage")
			}
			g.AwardType, g.Asset, g.BudgetID = r.ref(t, "award"), ledger.Asset(r.ref(t, "asset")), r.ref(t, "budget")
			g.Amount, g.LeaseID = r.varint("amount"), r.uvarint("lease_id")
			g.OpenTime, g.IssuedAt = r.varint("open_time"), r.varint("issued_at")
			res[i].Grant = g
		}
		switch {
		case flags&flagNotOwner != 0:
			res[i].Err = ErrNotOwner
		case flags&flagErr != 0:
			res[i].Err = &remoteError{text: r.str("error")}
		}
	}
	if r.err == nil && r.rest() != 0 {
		r.fail("length")
	}
	return r.err
}

// Serve decides a batch that another node forwarded to this one (the
// owner of its shard) and returns the answers: the same as this node gives
// its own clients. It answers an ask for outstanding packets
// (outstanding.go, AppendAsk) as well. Grants of a shard this node does not own are answered
// ErrNotOwner, never forwarded again.
func (a *Admission) Serve(body []byte) []byte {
	if len(body) > 0 && body[0] == askKind {
		return a.serveOutstanding(body) // outstanding.go
	}
	_, reqs, ids, err := DecodeForward(body)
	if err != nil {
		a.log.Warn("grant: unreadable forwarded batch", "err", err)
		return nil
	}
	res := make([]Result, len(reqs))
	a.admit(reqs, res, ids)
	a.forwardedIn.Add(int64(len(reqs)))
	return AppendAnswers(nil, res)
}

// forward sends the batch's grants to their shard's owner and fills in
// its answers. Grants forwarded to this node are answered ErrNotOwner.
func (s *shard) forward(batch []*item) {
	a := s.a
	out := s.fresh[:0]
	defer func() { clear(out); s.fresh = out[:0] }()
	for _, it := range batch {
		if it.forwarded {
			*it.res = Result{Outcome: Unavailable, Err: ErrNotOwner}
			continue
		}
		out = append(out, it)
	}
	if len(out) == 0 {
		return
	}
	t0 := time.Now()
	defer func() { a.stageTime[stageForward].ObserveNs(time.Since(t0).Nanoseconds()) }()
	a.forwardedOut.Add(int64(len(out)))
	// A second try after the owner moved (it answered "not owner", or did
	// not answer): the store names the new one.
	for try := 0; ; try++ {
		addr, err := s.owner(try > 0)
		switch {
		case err != nil:
			answerAll(out, Result{Outcome: Unavailable, Err: err})
			return
		case addr == "" || addr == a.self:
			// Nobody owns the shard yet, or this node does and has not
			// caught up (it would decide it itself).
			// Not cached: the store names the next owner only once it took
			// the partition over (the owner named here gives it up first).
			a.log.Debug("grant: shard without an owner that decides it", "shard", s.id, "owner", addr, "try", try)
			s.remote = ""
			answerAll(out, Result{Outcome: Unavailable, Err: errMoving})
			return
		}
		s.strs.reset()
		s.body = appendForward(s.body[:0], &s.strs, s.id, len(out), func(i int) (*Request, uint64) { return out[i].req, out[i].g.ActID })
		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		reply, err := a.peers.Forward(ctx, addr, s.body)
		cancel()
		if err == nil {
			s.answers = s.answers[:0]
			for _, it := range out {
				s.answers = append(s.answers, Result{Grant: it.g})
			}
			err = DecodeAnswers(reply, s.answers)
		}
		if err != nil {
			s.remote = ""
			if try == 0 {
				continue
			}
			answerAll(out, Result{Outcome: Unavailable, Err: fmt.Errorf("grant: forwarding to the shard's owner %s: %w", addr, err)})
			return
		}
		moved := false
		for i, it := range out {
			*it.res = s.answers[i]
			moved = moved || errors.Is(s.answers[i].Err, ErrNotOwner)
		}
		clear(s.answers)
		if !moved {
			return
		}
		s.remote = ""
		if try > 0 {
			a.log.Debug("grant: the shard's owner in the store answers that it is not", "shard", s.id, "owner", addr)
			for _, it := range out {
				if errors.Is(it.res.Err, ErrNotOwner) {
					*it.res = Result{Outcome: Unavailable, Err: errMoving}
				}
			}
			return
		}
		kept := out[:0]
		for _, it := range out {
			if errors.Is(it.res.Err, ErrNotOwner) {
				kept = append(kept, it)
			}
		}
		out = kept
	}
}

// owner returns the shard owner's address: the one known, or (when fresh
// or none is known) the store's, read at most every ownerRefreshMin.
func (s *shard) owner(fresh bool) (string, error) {
	if s.remote != "" && !fresh {
		return s.remote, nil
	}
	if !fresh && time.Since(s.remoteAt) < ownerRefreshMin {
		return s.remote, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	addr, err := s.a.peers.Owner(ctx, s.id)
	s.remoteAt = time.Now()
	if err != nil {
		return "", fmt.Errorf("grant: finding the shard's owner: %w", err)
	}
	s.remote = addr
	return addr, nil
}

func answerAll(its []*item, r Result) {
	for _, it := range its {
		*it.res = r
	}
}
