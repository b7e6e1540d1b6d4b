package grant_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"redrain/campaign"
	"redrain/grant"
	"redrain/grant/granttest"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/tokens"
)

// memStream is a grant topic in memory: every append is acknowledged and
// kept, in order.
type memStream struct {
	parts int32
	mu    sync.Mutex
	all   []ledger.Grant
}

func (s *memStream) Partitions() int32            { return s.parts }
func (s *memStream) Partition(actID uint64) int32 { return storage.PartitionOf(actID, s.parts) }
func (s *memStream) Append(_ int32, gs []ledger.Grant) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, gs...)
	return 1, nil
}

// events returns what the stream holds of act, as booking would read it.
// bookOps are gs as booking reports them: booked ops.
func bookOps(gs []ledger.Grant) []ledger.Op {
	ops := make([]ledger.Op, len(gs))
	for i := range gs {
		ops[i] = ledger.Op{Kind: ledger.OpBook, Grant: gs[i]}
	}
	return ops
}

func (s *memStream) events(act uint64) []ledger.Grant {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ledger.Grant
	for _, g := range s.all {
		if g.ActID == act {
			out = append(out, g)
		}
	}
	return out
}

// budgets is a granttest.Budget per budget id (one for all would let a
// holder close another budget's leases as strays of its own).
type budgets struct {
	total int64
	now   func() time.Time
	mu    sync.Mutex
	of    map[string]*granttest.Budget
}

func (b *budgets) get(id string) *granttest.Budget {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.of[id]
	if m == nil {
		m = granttest.NewBudget(b.total)
		m.Now = b.now
		b.of[id] = m
	}
	return m
}

func (b *budgets) TakeLease(id string, want int64, owner string, inc uint64) (*ledger.Lease, error) {
	return b.get(id).TakeLease(id, want, owner, inc)
}
func (b *budgets) RenewLease(id string, lease uint64, owner string, inc uint64) (int64, error) {
	return b.get(id).RenewLease(id, lease, owner, inc)
}
func (b *budgets) CloseLease(id string, lease uint64, issued, count int64) error {
	return b.get(id).CloseLease(id, lease, issued, count)
}
func (b *budgets) OpenLeasesOf(id, owner string, inc uint64) ([]*ledger.Lease, error) {
	return b.get(id).OpenLeasesOf(id, owner, inc)
}

// outstandingStart is when the test's windowed rain opens; the tests'
// clock starts a minute later.
var outstandingStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// outstandingCampaign serves two activities: "demo" (one rain) and
// "multi", four rains always open in scene "s" and rain 9 of scene "late"
// open for an hour from outstandingStart, with two awards of different
// kinds (money and a coin), so packets differ in award, asset and budget.
func outstandingCampaign(t testing.TB, rains int) (*campaign.Campaign, *campaign.Catalog) {
	t.Helper()
	multi := campaign.Activity{
		ID: "multi",
		Awards: []campaign.Award{{Type: "cash", Kind: campaign.KindMoney, Min: 1, Max: 500},
			{Type: "gold", Kind: campaign.KindCoin, Currency: "gold", Min: 10, Max: 20}},
		Stages: []campaign.Stage{{Stage: "formal", Budgets: map[string]int64{"cash": 1 << 40, "gold": 1 << 40}}},
	}
	for r := range uint64(rains) {
		multi.Rains = append(multi.Rains, campaign.Rain{SceneID: "s", RainID: r + 1, AlwaysOpen: true, Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)})
	}
	multi.Rains = append(multi.Rains, campaign.Rain{SceneID: "late", RainID: 9, Start: outstandingStart, End: outstandingStart.Add(time.Hour)})
	cc := campaign.Demo()
	cc.Activities = append(cc.Activities, multi)
	return compiled(t, cc)
}

// compiled compiles cc and the catalog of its seed activities.
func compiled(t testing.TB, cc *campaign.Config) (*campaign.Campaign, *campaign.Catalog) {
	t.Helper()
	camp, err := campaign.Compile(cc)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := camp.SeedCatalog()
	if err != nil {
		t.Fatal(err)
	}
	return camp, cat
}

// outstandingRig is an owner of every shard over a stream in memory and,
// unless owner, a node that owns none and forwards to it (in process).
type outstandingRig struct {
	adm, owner *grant.Admission
	stream     *memStream
	mu         sync.Mutex
	offset     time.Duration // the rig's clock is the real one moved by offset
	rains      int           // always-open rains of multi's scene "s"
}

func (r *outstandingRig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Now().Add(r.offset)
}
func (r *outstandingRig) advance(d time.Duration) {
	r.mu.Lock()
	r.offset += d
	r.mu.Unlock()
}

func newOutstandingRig(t testing.TB, parts int32, owner bool, stream grant.Stream) *outstandingRig {
	return newOutstandingRigOf(t, parts, owner, stream, 4)
}

// newOutstandingRigOf is newOutstandingRig with rains always-open rains
// in multi's scene "s".
func newOutstandingRigOf(t testing.TB, parts int32, owner bool, stream grant.Stream, rains int) *outstandingRig {
	t.Helper()
	camp, cat := outstandingCampaign(t, rains)
	r := &outstandingRig{offset: time.Until(outstandingStart.Add(time.Minute)), rains: rains}
	budget := &budgets{total: 1 << 50, now: r.clock, of: map[string]*granttest.Budget{}}
	if m, ok := stream.(*memStream); ok {
		r.stream = m
	}
	resolver := &seqResolver{ids: map[string]uint64{}}
	r.owner = grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: camp, Resolver: resolver, Stream: stream,
		Leases: budget, Node: "n-owner", Incarnation: 1, Metrics: &metrics.Registry{}, Clock: r.clock, Owner: true})
	r.owner.SetCatalog(cat)
	t.Cleanup(func() { r.owner.Close(context.Background()) })
	r.adm = r.owner
	if !owner {
		r.adm = grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: camp, Resolver: resolver, Stream: stream,
			Leases: granttest.NewBudget(0), Peers: peersOf{r.owner}, Self: "front", Node: "n-front", Incarnation: 1,
			Metrics: &metrics.Registry{}, Clock: r.clock})
		r.adm.SetCatalog(cat)
		t.Cleanup(func() { r.adm.Close(context.Background()) })
	}
	return r
}

// grantAll grants user a packet in every rain of both activities and
// returns the answers (each issued, checked).
func (r *outstandingRig) grantAll(t testing.TB, user string) []ledger.Grant {
	t.Helper()
	reqs := []grant.Request{{AppID: 3, UserID: user, ActivityID: "demo", SceneID: "rain", RainID: 1},
		{AppID: 3, UserID: user, ActivityID: "multi", SceneID: "late", RainID: 9}}
	for rain := range uint64(r.rains) {
		reqs = append(reqs, grant.Request{AppID: 3, UserID: user, ActivityID: "multi", SceneID: "s", RainID: rain + 1})
	}
	res := make([]grant.Result, len(reqs))
	r.adm.Admit(reqs, res)
	out := make([]ledger.Grant, len(res))
	for i, x := range res {
		if x.Outcome != grant.Issued {
			t.Fatalf("grant %+v = %v (%v), want issued", reqs[i], x.Outcome, x.Err)
		}
		out[i] = x.Grant
	}
	return out
}

func outstanding(t testing.TB, a *grant.Admission, act uint64) []ledger.Grant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := a.Outstanding(ctx, act)
	if err != nil {
		t.Fatalf("Outstanding(%d): %v", act, err)
	}
	return gs
}

// asRedeemed is an event of the stream as redeem books it from its token:
// lease 0 (the event attributes it), no issue time or app user id.
func asRedeemed(g ledger.Grant) ledger.Grant {
	g.LeaseID, g.IssuedAt, g.UserID = 0, 0, ""
	return g
}

func byKey(gs []ledger.Grant) map[string]ledger.Grant {
	m := map[string]ledger.Grant{}
	for _, g := range gs {
		m[g.LimitKey()] = g
	}
	return m
}

// TestOutstandingUntilBooked: a user's packets in six rains of two
// activities (two awards, a coin and money) are outstanding from their
// acknowledgement until booking reports them, each exactly as its stream
// event and its token book it; a rain that closed meanwhile keeps its
// packet outstanding; a user granted nothing has none.
func TestOutstandingUntilBooked(t *testing.T) {
	forEachMode(t, func(t *testing.T, owner bool) {
		r := newOutstandingRig(t, 4, owner, &memStream{parts: 4})
		granted := r.grantAll(t, "alice")
		other := r.grantAll(t, "bob")
		act := granted[0].ActID

		check := func(got []ledger.Grant, want int) {
			t.Helper()
			if len(got) != want {
				t.Fatalf("Outstanding = %d packets %+v, want %d", len(got), got, want)
			}
			events := byKey(r.stream.events(act))
			answers := byKey(granted)
			for _, g := range got {
				e, ok := events[g.LimitKey()]
				if !ok {
					t.Fatalf("outstanding packet %+v has no stream event", g)
				}
				if asRedeemed(e) != g {
					t.Errorf("outstanding packet %+v, want its stream event as redeem books it %+v", g, asRedeemed(e))
				}
				// The token the client holds opens to the same claims and
				// out_trade_no.
				a := answers[g.LimitKey()]
				if c := a.Claims(); g.Claims() != c || tokens.OutTradeNo(g.IdempotencyKey()) != tokens.OutTradeNo(c.IdempotencyKey()) {
					t.Errorf("outstanding packet's claims %+v, want the token's %+v", g.Claims(), c)
				}
			}
			if !slices.IsSortedFunc(got, func(a, b ledger.Grant) int {
				return cmpKeys(a, b)
			}) {
				t.Errorf("Outstanding not in rain order: %+v", got)
			}
		}
		check(outstanding(t, r.adm, act), len(granted))

		// Rain 9 closes: its packet is still owed until booked.
		r.advance(2 * time.Hour)
		check(outstanding(t, r.adm, act), len(granted))

		// Booking reports the demo packet and two of multi's.
		booked := []ledger.Grant{granted[0], granted[2], granted[3]}
		r.owner.MarkBooked(grant.BookedOf(bookOps(booked)))
		got := outstanding(t, r.adm, act)
		check(got, len(granted)-len(booked))
		for _, g := range got {
			for _, b := range booked {
				if g.LimitKey() == b.LimitKey() {
					t.Errorf("booked packet %s still outstanding", g.LimitKey())
				}
			}
		}
		r.owner.MarkBooked(grant.BookedOf(bookOps(granted)))
		if got := outstanding(t, r.adm, act); len(got) != 0 {
			t.Errorf("Outstanding after booking = %+v, want none", got)
		}
		// Another user's packets are theirs alone.
		if got := outstanding(t, r.adm, other[0].ActID); len(got) != len(other) {
			t.Errorf("bob's outstanding = %d, want %d", len(got), len(other))
		}
		if got := outstanding(t, r.adm, 1<<40); len(got) != 0 {
			t.Errorf("Outstanding of a user granted nothing = %+v, want none", got)
		}
	})
}

func cmpKeys(a, b ledger.Grant) int {
	switch {
	case a.ActivityID != b.ActivityID:
		return cmpStr(a.ActivityID, b.ActivityID)
	case a.SceneID != b.SceneID:
		return cmpStr(a.SceneID, b.SceneID)
	case a.RainID != b.RainID:
		if a.RainID < b.RainID {
			return -1
		}
		return 1
	}
	return int(a.Stage) - int(b.Stage)
}

func cmpStr(a, b string) int {
	if a < b {
		return -1
	}
	return 1
}

// TestOutstandingManyRainsAndUsers: 200 users in five rains each, spread
// over eight shards: each user's outstanding packets are exactly the
// stream's events of that user, and a repeat grant changes nothing.
func TestOutstandingManyRainsAndUsers(t *testing.T) {
	r := newOutstandingRig(t, 8, true, &memStream{parts: 8})
	reqs := []grant.Request{}
	for u := range 200 {
		for rain := range uint64(4) {
			reqs = append(reqs, grant.Request{AppID: 5, UserID: fmt.Sprintf("m%d", u), ActivityID: "multi", SceneID: "s", RainID: rain + 1})
		}
		reqs = append(reqs, grant.Request{AppID: 5, UserID: fmt.Sprintf("m%d", u), ActivityID: "demo", SceneID: "rain", RainID: 1})
	}
	for range 2 { // the second time every grant is a repeat
		res := make([]grant.Result, len(reqs))
		r.adm.Admit(reqs, res)
		for i, x := range res {
			if x.Outcome != grant.Issued && x.Outcome != grant.Repeat {
				t.Fatalf("grant %d = %v (%v)", i, x.Outcome, x.Err)
			}
		}
	}
	users, assets := map[uint64]bool{}, map[ledger.Asset]bool{}
	r.stream.mu.Lock()
	for _, g := range r.stream.all {
		users[g.ActID], assets[g.Asset] = true, true
	}
	r.stream.mu.Unlock()
	if len(assets) != 2 {
		t.Fatalf("assets granted %v, want money and the coin", assets)
	}
	if len(users) != 200 {
		t.Fatalf("%d users on the stream, want 200", len(users))
	}
	for act := range users {
		want := r.stream.events(act)
		got := outstanding(t, r.adm, act)
		if len(got) != 5 || len(want) != 5 {
			t.Fatalf("act %d: %d outstanding, %d events, want 5 each", act, len(got), len(want))
		}
		events := byKey(want)
		for _, g := range got {
			if asRedeemed(events[g.LimitKey()]) != g {
				t.Errorf("act %d: outstanding %+v, want %+v", act, g, asRedeemed(events[g.LimitKey()]))
			}
		}
	}
}

// TestOutstandingNotPending: a grant whose record may or may not have
// landed (its produce failed) is not outstanding: the client was answered
// unavailable, and booking it now could credit a packet no record holds.
func TestOutstandingNotPending(t *testing.T) {
	r := newOutstandingRig(t, 1, true, failingStream{parts: 1})
	res := make([]grant.Result, 1)
	r.adm.Admit([]grant.Request{{AppID: 1, UserID: "p", ActivityID: "demo", SceneID: "rain", RainID: 1}}, res)
	if res[0].Outcome != grant.Unavailable {
		t.Fatalf("grant on a failing stream = %v, want unavailable", res[0].Outcome)
	}
	// The user is act 1 (the resolver's first).
	if got := outstanding(t, r.adm, 1); len(got) != 0 {
		t.Errorf("Outstanding with a pending claim = %+v, want none", got)
	}
}

// TestOutstandingErrors: no owner that decides the shard, an owner that
// cannot be reached, one that answers it is not the owner, a stopped
// node and a caller that gives up are ErrUnavailable (retry); act_id 0 is
// ErrNoUser.
func TestOutstandingErrors(t *testing.T) {
	camp, cat := outstandingCampaign(t, 4)
	newFront := func(peers grant.Peers) *grant.Admission {
		a := grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: camp, Resolver: &seqResolver{ids: map[string]uint64{}},
			Stream: &memStream{parts: 2}, Leases: granttest.NewBudget(0), Peers: peers, Self: "front", Node: "n-front",
			Incarnation: 1, Metrics: &metrics.Registry{}, Clock: time.Now})
		a.SetCatalog(cat)
		t.Cleanup(func() { a.Close(context.Background()) })
		return a
	}
	unavailable := func(what string, a *grant.Admission, ctx context.Context) {
		t.Helper()
		gs, err := a.Outstanding(ctx, 7)
		if !errors.Is(err, grant.ErrUnavailable) || gs != nil {
			t.Errorf("%s: Outstanding = %+v, %v, want unavailable", what, gs, err)
		}
	}
	ctx := context.Background()
	unavailable("no peers, shard not owned", newFront(nil), ctx)
	unavailable("owner unreachable", newFront(downPeers{}), ctx)
	unavailable("no owner yet", newFront(noOwner{}), ctx)
	// A node that owns no shard either answers "not owner", twice.
	other := newFront(nil)
	unavailable("owner named by the store is not", newFront(peersOf{other}), ctx)

	front := newFront(nil)
	if _, err := front.Outstanding(ctx, 0); !errors.Is(err, grant.ErrNoUser) {
		t.Errorf("Outstanding(0) = %v, want ErrNoUser", err)
	}
	release := make(chan struct{})
	blocked := newFront(blockingPeers{release})
	t.Cleanup(func() { close(release) }) // before blocked closes
	cancelled, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	unavailable("the caller gives up", blocked, cancelled)
	front.Close(ctx)
	unavailable("stopped", front, ctx)
}

type downPeers struct{}

func (downPeers) Owner(context.Context, int32) (string, error) { return "owner", nil }
func (downPeers) Forward(context.Context, string, []byte) ([]byte, error) {
	return nil, errors.New("no answer from owner")
}

type noOwner struct{}

func (noOwner) Owner(context.Context, int32) (string, error) { return "", nil }
func (noOwner) Forward(context.Context, string, []byte) ([]byte, error) {
	return nil, errors.New("not reached")
}

// blockingPeers answers nothing until released.
type blockingPeers struct{ release chan struct{} }

func (blockingPeers) Owner(context.Context, int32) (string, error) { return "owner", nil }
func (p blockingPeers) Forward(ctx context.Context, _ string, _ []byte) ([]byte, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.release:
		return nil, errors.New("released")
	}
}

// TestAskCodecRoundTrip: an ask and its answers cross the wire unchanged,
// a cut or altered message is refused, and a node that knows only batches
// of grants cannot misread an ask as one.
func TestAskCodecRoundTrip(t *testing.T) {
	ids := []uint64{1, 1<<64 - 1, 42}
	body := grant.AppendAsk(nil, 3, ids)
	p, got, err := grant.DecodeAsk(body)
	if err != nil || p != 3 || !slices.Equal(got, ids) {
		t.Fatalf("DecodeAsk = %d %v %v", p, got, err)
	}
	for n := range len(body) {
		if _, _, err := grant.DecodeAsk(body[:n]); err == nil {
			t.Errorf("an ask cut to %d of %d bytes decoded", n, len(body))
		}
	}
	if _, _, _, err := grant.DecodeForward(body); err == nil {
		t.Error("an ask decoded as a batch of grants")
	}
	g := ledger.Grant{AppID: 1<<32 - 1, ActivityID: "multi", SceneID: "s", RainID: 1 << 60, Stage: tokens.StageGray,
		AwardType: "gold", Asset: "coin:gold", Amount: 17, BudgetID: "multi/gray/gold", OpenTime: 1_700_000_000_000}
	h := g
	h.AwardType, h.Asset, h.BudgetID, h.Amount, h.Stage = "cash", "cash", "multi/formal/cash", 1, tokens.StageFormal
	grants := [][]ledger.Grant{{g, h}, nil, nil, nil}
	errs := []error{nil, grant.ErrNotOwner, errors.New("shard moving"), fmt.Errorf("%w: claim table", ledger.ErrInvariant)}
	ids = append(ids, 43)
	wire := grant.AppendAskAnswers(nil, grants, errs)
	gotG, gotE, err := grant.DecodeAskAnswers(wire, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotG[0], grants[0]) || len(gotG[1]) != 0 || len(gotG[2]) != 0 || len(gotG[3]) != 0 {
		t.Errorf("answers = %+v, want %+v", gotG, grants)
	}
	if gotE[0] != nil || !errors.Is(gotE[1], grant.ErrNotOwner) || gotE[2] == nil || gotE[2].Error() != "shard moving" ||
		errors.Is(gotE[2], ledger.ErrInvariant) || !errors.Is(gotE[3], ledger.ErrInvariant) {
		t.Errorf("errors = %v, want %v", gotE, errs)
	}
	if _, _, err := grant.DecodeAskAnswers(wire, 3); err == nil {
		t.Error("answers for another ask size decoded")
	}
	for n := range len(wire) {
		if _, _, err := grant.DecodeAskAnswers(wire[:n], len(ids)); err == nil {
			t.Errorf("answers cut to %d of %d bytes decoded", n, len(wire))
		}
	}
}

// FuzzDecodeAsk: no input makes the ask decoders panic, and an ask that
// decodes survives a round trip.
func FuzzDecodeAsk(f *testing.F) {
	f.Add(grant.AppendAsk(nil, 1, []uint64{9, 10}))
	f.Add(grant.AppendAskAnswers(nil, [][]ledger.Grant{{{AppID: 1, ActivityID: "a", SceneID: "s", RainID: 1, AwardType: "cash",
		Asset: "cash", Amount: 5, BudgetID: "a/formal/cash"}}, nil}, []error{nil, errors.New("x")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, ids, err := grant.DecodeAsk(b); err == nil {
			p2, ids2, err := grant.DecodeAsk(grant.AppendAsk(nil, p, ids))
			if err != nil || p2 != p || !slices.Equal(ids2, ids) {
				t.Errorf("%x: round trip gave %d %v %v", b, p2, ids2, err)
			}
		}
		for n := range 3 {
			_, _, _ = grant.DecodeAskAnswers(b, n)
		}
	})
}

// BenchmarkOutstanding asks for the outstanding packets of users with 10
// each (one per rain of two activities, money and coin awards), among
// 2,000 such users on 8 shards: on the shard's owner (an idle shard
// answers at once) and through a node that forwards the ask to it (in
// process: the encodings and the owner's Serve, no network). ns/op is one
// user's answer; parallel asks from GOMAXPROCS callers at once.
func BenchmarkOutstanding(b *testing.B) {
	for _, owner := range []bool{true, false} {
		r := newOutstandingRigOf(b, 8, owner, &memStream{parts: 8}, 8)
		var ids []uint64
		for u := range 2000 {
			gs := r.grantAll(b, fmt.Sprintf("bench%d", u))
			ids = append(ids, gs[0].ActID)
		}
		ctx := context.Background()
		ask := func(id uint64) {
			gs, err := r.adm.Outstanding(ctx, id)
			if err != nil || len(gs) != 10 {
				b.Fatalf("Outstanding(%d) = %d packets, %v; want 10", id, len(gs), err)
			}
		}
		b.Run(fmt.Sprintf("owner=%v", owner), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ask(ids[i%len(ids)])
				i++
			}
		})
		b.Run(fmt.Sprintf("owner=%v/parallel", owner), func(b *testing.B) {
			b.ReportAllocs()
			var next sync.Mutex
			i := 0
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					next.Lock()
					id := ids[i%len(ids)]
					i++
					next.Unlock()
					ask(id)
				}
			})
		})
	}
}

// TestOutstandingFollowsOwnership: a shard answers only while it decides
// its users: unavailable while it restores the store's packets, under a
// tenure booking has not confirmed lately and after Disown; restored
// (booked) packets are never outstanding, issued ones are.
func TestOutstandingFollowsOwnership(t *testing.T) {
	camp, cat := outstandingCampaign(t, 4)
	adm := grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: camp, Resolver: &seqResolver{ids: map[string]uint64{}},
		Stream: &memStream{parts: 1}, Leases: &budgets{total: 1 << 40, now: time.Now, of: map[string]*granttest.Budget{}},
		Node: "n-test", Incarnation: 1, Metrics: &metrics.Registry{}, Clock: time.Now})
	adm.SetCatalog(cat)
	t.Cleanup(func() { adm.Close(context.Background()) })
	ctx := context.Background()
	want := func(what string, act uint64, n int, unavailable bool) {
		t.Helper()
		gs, err := adm.Outstanding(ctx, act)
		switch {
		case unavailable && !errors.Is(err, grant.ErrUnavailable):
			t.Fatalf("%s: Outstanding = %+v, %v, want unavailable", what, gs, err)
		case !unavailable && (err != nil || len(gs) != n):
			t.Fatalf("%s: Outstanding = %+v, %v, want %d packets", what, gs, err, n)
		}
	}
	want("not owned", 2, 0, true)
	ten := &tenure{}
	ten.valid.Store(true)
	release := make(chan struct{})
	adm.Own(0, ten, func(context.Context) ([]grant.Booked, error) {
		<-release
		return []grant.Booked{{ActID: 2, Rain: "demo_rain_1_formal", AwardType: "cash", Amount: 55}}, nil
	})
	want("restoring", 2, 0, true)
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for _, err := adm.Outstanding(ctx, 2); err != nil; _, err = adm.Outstanding(ctx, 2) {
		if time.Now().After(deadline) {
			t.Fatalf("shard not restored: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	want("a restored packet", 2, 0, false)
	res := make([]grant.Result, 1)
	adm.Admit([]grant.Request{{AppID: 1, UserID: "x", ActivityID: "multi", SceneID: "s", RainID: 2}}, res)
	if res[0].Outcome != grant.Issued {
		t.Fatalf("grant = %v (%v)", res[0].Outcome, res[0].Err)
	}
	want("issued", res[0].Grant.ActID, 1, false)
	ten.valid.Store(false)
	want("tenure not confirmed", res[0].Grant.ActID, 0, true)
	ten.valid.Store(true)
	want("tenure confirmed again", res[0].Grant.ActID, 1, false)
	adm.Disown(0)
	want("disowned", res[0].Grant.ActID, 0, true)
}

// stalledStream holds every append until released.
type stalledStream struct {
	memStream
	entered chan struct{} // one send per append
	release chan struct{}
}

func (s *stalledStream) Append(p int32, gs []ledger.Grant) (int, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.memStream.Append(p, gs)
}

// TestOutstandingAsksBounded: a shard stalled on its stream holds at most
// a bounded number of questions; past it Outstanding answers unavailable
// at once instead of queueing more.
func TestOutstandingAsksBounded(t *testing.T) {
	stream := &stalledStream{memStream: memStream{parts: 1}, entered: make(chan struct{}, 4), release: make(chan struct{})}
	r := newOutstandingRig(t, 1, true, stream)
	released := false
	release := func() {
		if !released {
			released = true
			close(stream.release)
		}
	}
	t.Cleanup(release) // before the rig closes
	go r.adm.Admit([]grant.Request{{AppID: 1, UserID: "s", ActivityID: "demo", SceneID: "rain", RainID: 1}}, make([]grant.Result, 1))
	<-stream.entered // the shard waits for its record's acknowledgement
	// Questions whose callers gave up stay queued until the batch ends.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for range 4096 {
		if _, err := r.adm.Outstanding(gone, 5); !errors.Is(err, grant.ErrUnavailable) {
			t.Fatalf("Outstanding with an ended context = %v, want unavailable", err)
		}
	}
	answered := make(chan error, 1)
	go func() {
		_, err := r.adm.Outstanding(context.Background(), 5)
		answered <- err
	}()
	select {
	case err := <-answered:
		if !errors.Is(err, grant.ErrUnavailable) {
			t.Fatalf("Outstanding past the bound = %v, want unavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Outstanding past the bound waits for the stalled shard")
	}
	release()
	// Once the batch ends the queue drains and questions are answered.
	deadline := time.Now().Add(10 * time.Second)
	for _, err := r.adm.Outstanding(context.Background(), 5); err != nil; _, err = r.adm.Outstanding(context.Background(), 5) {
		if time.Now().After(deadline) {
			t.Fatalf("Outstanding once the shard goes on: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOneUserManyPacketsInOneBatch: one request asks for one user's
// packets of six rains of two activities, each twice or three times, in
// a shuffled order (one batch of one shard): one packet a rain, the
// repeats answered the same packet, six grants on the stream. The shard
// finds duplicates among a user's earlier leads of the batch, by act_id
// then limit key.
func TestOneUserManyPacketsInOneBatch(t *testing.T) {
	forEachMode(t, func(t *testing.T, owner bool) {
		r := newOutstandingRig(t, 4, owner, &memStream{parts: 4})
		rains := []grant.Request{{AppID: 3, UserID: "many", ActivityID: "demo", SceneID: "rain", RainID: 1},
			{AppID: 3, UserID: "many", ActivityID: "multi", SceneID: "late", RainID: 9}}
		for rain := range uint64(4) {
			rains = append(rains, grant.Request{AppID: 3, UserID: "many", ActivityID: "multi", SceneID: "s", RainID: rain + 1})
		}
		order := []int{2, 0, 2, 5, 1, 3, 0, 4, 5, 2, 1, 3, 4}
		reqs := make([]grant.Request, len(order))
		for i, k := range order {
			reqs[i] = rains[k]
		}
		res := make([]grant.Result, len(reqs))
		r.adm.Admit(reqs, res)
		first := map[int]grant.Result{}
		for i, k := range order {
			x := res[i]
			if x.Outcome != grant.Issued && x.Outcome != grant.Repeat {
				t.Fatalf("request %d (rain %d) = %v (%v)", i, k, x.Outcome, x.Err)
			}
			f, seen := first[k]
			if !seen {
				first[k] = x
				continue
			}
			if x.Grant.Claims() != f.Grant.Claims() {
				t.Errorf("request %d (rain %d) answered %+v, its first %+v", i, k, x.Grant, f.Grant)
			}
		}
		keys := map[string]bool{}
		for _, x := range first {
			keys[x.Grant.LimitKey()] = true
		}
		if len(keys) != len(rains) {
			t.Fatalf("%d packets for %d rains", len(keys), len(rains))
		}
		r.stream.mu.Lock()
		defer r.stream.mu.Unlock()
		if len(r.stream.all) != len(rains) {
			t.Errorf("%d grants on the stream, want %d", len(r.stream.all), len(rains))
		}
	})
}
