package grant_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"redrain/campaign"
	"redrain/grant"
	"redrain/grant/granttest"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/metrics/promexport"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// seqResolver binds each new identity to the next act_id, in memory.
type seqResolver struct {
	mu   sync.Mutex
	ids  map[string]uint64
	next uint64
}

func (r *seqResolver) ResolveMany(_ context.Context, apps []uint32, users []string, ids []uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range apps {
		k := fmt.Sprintf("%d/%s", apps[i], users[i])
		id, ok := r.ids[k]
		if !ok {
			r.next++
			id = r.next
			r.ids[k] = id
		}
		ids[i] = id
	}
	return nil
}

type fixture struct {
	adm    *grant.Admission // where the test sends its grants
	owner  *grant.Admission // the owner of every shard (adm itself, or the node adm forwards to)
	budget *granttest.Budget
	kafka  *storage.Kafka
	parts  int32
	reg    *metrics.Registry
	// What built the admissions, for tests that build more.
	stream  *storage.GrantWriter
	camp    *campaign.Campaign
	catalog *campaign.Catalog
}

// close stops the admission the test sends to and the owner.
func (f *fixture) close() {
	f.adm.Close(context.Background())
	f.owner.Close(context.Background())
}

// peersOf forwards batches to owner in process, as a node's peers do over
// the actor cluster.
type peersOf struct{ owner *grant.Admission }

func (p peersOf) Owner(context.Context, int32) (string, error) { return "owner", nil }
func (p peersOf) Forward(_ context.Context, addr string, body []byte) ([]byte, error) {
	if addr != "owner" {
		return nil, fmt.Errorf("no node at %q", addr)
	}
	return p.owner.Serve(body), nil
}

// newFixture runs an admission against the embedded broker and a budget in
// memory, serving the demo campaign; it owns no shard and forwards every
// batch to another admission that owns them all.
func newFixture(t testing.TB, parts int32, total int64, inFlightMax int) *fixture {
	return newFixtureOwner(t, parts, total, inFlightMax, false)
}

// newFixtureOwner is newFixture with owner saying whether the admission
// the test sends to owns every shard itself.
func newFixtureOwner(t testing.TB, parts int32, total int64, inFlightMax int, owner bool) *fixture {
	return newFixtureTimed(t, parts, total, inFlightMax, owner, storage.DefaultWriterTiming, time.Now)
}

// newFixtureTimed is newFixtureOwner with the grant writer's timing and
// the clock of the admissions and the budget grain.
func newFixtureTimed(t testing.TB, parts int32, total int64, inFlightMax int, owner bool, timing storage.WriterTiming, clock func() time.Time) *fixture {
	t.Helper()
	k := storagetest.Kafka(t, "", parts)
	gw, err := storage.NewGrantWriterTimed(k.Brokers, parts, timing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	camp, err := campaign.Compile(campaign.Demo())
	if err != nil {
		t.Fatal(err)
	}
	cat, err := camp.SeedCatalog()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{budget: granttest.NewBudget(total), kafka: k, parts: parts, reg: &metrics.Registry{}, stream: gw, camp: camp, catalog: cat}
	f.budget.Now = clock
	resolver := &seqResolver{ids: map[string]uint64{}}
	ownerReg := f.reg
	if !owner {
		ownerReg = &metrics.Registry{}
	}
	f.owner = grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: camp,
		Resolver: resolver, Stream: gw, Leases: f.budget,
		Node: "n-test", Incarnation: 1, Metrics: ownerReg, Clock: clock, InFlightMax: inFlightMax, Owner: true})
	f.owner.SetCatalog(cat)
	f.adm = f.owner
	if !owner {
		f.adm = grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: camp,
			Resolver: resolver, Stream: gw, Leases: granttest.NewBudget(0), Peers: peersOf{f.owner}, Self: "front",
			Node: "n-front", Incarnation: 1, Metrics: f.reg, Clock: clock, InFlightMax: inFlightMax})
		f.adm.SetCatalog(cat)
	}
	t.Cleanup(f.close)
	return f
}

func demoRequests(users ...string) []grant.Request {
	out := make([]grant.Request, len(users))
	for i, u := range users {
		out[i] = grant.Request{AppID: 1, UserID: u, ActivityID: "demo", SceneID: "rain", RainID: 1}
	}
	return out
}

func admit(f *fixture, reqs []grant.Request) []grant.Result {
	res := make([]grant.Result, len(reqs))
	f.adm.Admit(reqs, res)
	return res
}

// records reads every grant record of the topic, checking that each grant
// is in its user's shard.
func records(t *testing.T, f *fixture) [][]ledger.Grant {
	t.Helper()
	var out [][]ledger.Grant
	for _, r := range storagetest.ReadGrantTopic(t, f.kafka.Brokers, f.parts) {
		for _, g := range r.Grants {
			if got := storage.PartitionOf(g.ActID, f.parts); got != r.Partition {
				t.Errorf("act %d in partition %d, want %d", g.ActID, r.Partition, got)
			}
		}
		out = append(out, r.Grants)
	}
	return out
}

// TestAdmitBatchOneRecordPerShard admits a request of many new users on
// one shard: one record carries them all, each is issued once, and a
// second request for the same users answers the identical packets.
func TestAdmitBatchOneRecordPerShard(t *testing.T) {
	forEachMode(t, testAdmitBatchOneRecordPerShard)
}

// forEachMode runs test against the owner of every shard, and against a
// node that forwards every batch to it.
func forEachMode(t *testing.T, test func(t *testing.T, owner bool)) {
	t.Run("owner", func(t *testing.T) { test(t, true) })
	t.Run("forwarded", func(t *testing.T) { test(t, false) })
}

func testAdmitBatchOneRecordPerShard(t *testing.T, owner bool) {
	f := newFixtureOwner(t, 1, 1<<40, 0, owner)
	var users []string
	for i := range 300 {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	first := admit(f, demoRequests(users...))
	for i, r := range first {
		if r.Outcome != grant.Issued || r.Grant.Amount <= 0 || r.Grant.LeaseID == 0 {
			t.Fatalf("grant %d = %v %+v, want issued with an amount and a lease", i, r.Outcome, r.Grant)
		}
	}
	again := admit(f, demoRequests(users...))
	for i, r := range again {
		a, b := first[i].Grant.Claims(), r.Grant.Claims()
		if r.Outcome != grant.Repeat || a != b {
			t.Errorf("repeat %d = %v %+v, want the identical packet %+v", i, r.Outcome, b, a)
		}
	}
	recs := records(t, f)
	if len(recs) != 1 || len(recs[0]) != len(users) {
		t.Fatalf("%d records (first holds %d grants), want 1 record of %d", len(recs), len(recs[0]), len(users))
	}
	if n := f.adm.Issued(); n != int64(len(users)) {
		t.Errorf("Issued() = %d, want %d", n, len(users))
	}
}

// TestAdmitDrawsFromTheKeys: each grant's award and amount are the draws
// of its limit and idempotency keys as ledger.Grant derives them (what a
// retry on any node recomputes), however admission builds the keys.
func TestAdmitDrawsFromTheKeys(t *testing.T) {
	f := newFixtureOwner(t, 4, 1<<50, 0, true)
	camp, err := campaign.Compile(campaign.Demo())
	if err != nil {
		t.Fatal(err)
	}
	salt := camp.Config.DrawSalt
	var users []string
	for i := range 300 {
		users = append(users, fmt.Sprintf("d%d", i))
	}
	for i, r := range admit(f, demoRequests(users...)) {
		g := &r.Grant
		if r.Outcome != grant.Issued {
			t.Fatalf("grant %d = %v, want issued", i, r.Outcome)
		}
		child := f.adm.Catalog().Activity(g.ActivityID).For(g.ActID).ChildFor(g.ActID)
		w := child.PickAward(ledger.DrawSeed(salt, g.LimitKey()))
		lo, hi := w.Range(0) // a budget of 2^50: nothing spent to speak of
		if want := ledger.Draw(ledger.DrawSeed(salt, g.IdempotencyKey()), lo, hi); g.AwardType != w.Type || g.Amount != want {
			t.Errorf("grant %d = %s %d, want %s %d", i, g.AwardType, g.Amount, w.Type, want)
		}
	}
}

// TestAdmitDuplicatesInOneBatch sends the same user three times in one
// request and concurrently from many requests: one packet, every answer
// identical, one grant on the stream.
func TestAdmitDuplicatesInOneBatch(t *testing.T) {
	forEachMode(t, testAdmitDuplicatesInOneBatch)
}

func testAdmitDuplicatesInOneBatch(t *testing.T, owner bool) {
	f := newFixtureOwner(t, 4, 1<<40, 0, owner)
	res := admit(f, demoRequests("dup", "other", "dup", "dup"))
	issued := 0
	for _, i := range []int{0, 2, 3} {
		switch res[i].Outcome {
		case grant.Issued:
			issued++
		case grant.Repeat:
		default:
			t.Fatalf("item %d = %v, want issued or repeat", i, res[i].Outcome)
		}
		if res[i].Grant.Claims() != res[0].Grant.Claims() {
			t.Errorf("item %d = %+v, want %+v", i, res[i].Grant, res[0].Grant)
		}
	}
	if issued != 1 {
		t.Errorf("%d of the duplicates issued, want 1", issued)
	}
	var wg sync.WaitGroup
	answers := make([][]grant.Result, 16)
	for i := range answers {
		wg.Go(func() { answers[i] = admit(f, demoRequests("racer", "dup")) })
	}
	wg.Wait()
	for i, a := range answers {
		if a[0].Outcome != grant.Issued && a[0].Outcome != grant.Repeat {
			t.Fatalf("racer %d = %v", i, a[0].Outcome)
		}
		if a[0].Grant.Claims() != answers[0][0].Grant.Claims() || a[1].Grant.Claims() != res[0].Grant.Claims() {
			t.Errorf("request %d answered different packets", i)
		}
	}
	seen := map[uint64]int{}
	for _, r := range records(t, f) {
		for _, g := range r {
			seen[g.ActID]++
		}
	}
	if len(seen) != 3 {
		t.Errorf("stream holds grants of %d users, want 3", len(seen))
	}
	for act, n := range seen {
		if n != 1 {
			t.Errorf("act %d has %d grants on the stream, want 1", act, n)
		}
	}
}

// TestAdmitBudgetAddsUp exhausts a small budget from concurrent batches:
// no overspend, and what the stream carries is what the leases issued.
func TestAdmitBudgetAddsUp(t *testing.T) {
	forEachMode(t, testAdmitBudgetAddsUp)
}

func testAdmitBudgetAddsUp(t *testing.T, owner bool) {
	const total = 20_000
	f := newFixtureOwner(t, 4, total, 0, owner)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			var users []string
			for i := range 50 {
				users = append(users, fmt.Sprintf("w%d-u%d", w, i))
			}
			for _, r := range admit(f, demoRequests(users...)) {
				if r.Outcome != grant.Issued && r.Outcome != grant.BudgetExhausted {
					t.Errorf("outcome %v, want issued or budget_exhausted", r.Outcome)
				}
			}
		})
	}
	wg.Wait()
	f.close()
	if err := f.budget.Check(); err != nil {
		t.Fatal(err)
	}
	var streamed, issued int64
	for _, r := range records(t, f) {
		for _, g := range r {
			streamed += g.Amount
		}
	}
	for _, l := range f.budget.Leases() {
		if !l.Closed {
			t.Errorf("lease %d open after Close", l.ID)
		}
		issued += l.Issued
	}
	if streamed != issued || issued > total {
		t.Errorf("stream carries %d, leases issued %d, budget %d: want stream = issued <= budget", streamed, issued, total)
	}
	if f.budget.Remaining()+issued != total {
		t.Errorf("remaining %d + issued %d != total %d", f.budget.Remaining(), issued, total)
	}
}

// TestAdmitShedsOverTheBound refuses a request that would take the node
// past its bound on grants in flight, at once and whole.
func TestAdmitShedsOverTheBound(t *testing.T) {
	f := newFixture(t, 1, 1<<40, 4)
	for i, r := range admit(f, demoRequests("a", "b", "c", "d", "e")) {
		if r.Outcome != grant.Shed {
			t.Errorf("item %d = %v, want shed", i, r.Outcome)
		}
	}
	for i, r := range admit(f, demoRequests("a", "b", "c", "d")) {
		if r.Outcome != grant.Issued {
			t.Errorf("item %d within the bound = %v, want issued", i, r.Outcome)
		}
	}
}

// TestAdmitRefusesBeforeShards answers bad requests without a shard and
// refuses everything once closed.
func TestAdmitRefusesBeforeShards(t *testing.T) {
	f := newFixture(t, 1, 1<<40, 0)
	reqs := []grant.Request{
		{AppID: 1, UserID: "x", ActivityID: "nope", SceneID: "rain", RainID: 1},
		{AppID: 1, UserID: "x", ActivityID: "demo", SceneID: "rain", RainID: 99},
	}
	res := admit(f, reqs)
	if res[0].Outcome != grant.UnknownActivity || res[1].Outcome != grant.UnknownRain {
		t.Errorf("outcomes %v, %v; want unknown_activity, unknown_rain", res[0].Outcome, res[1].Outcome)
	}
	f.adm.Close(context.Background())
	if r := admit(f, demoRequests("late")); r[0].Outcome != grant.Unavailable {
		t.Errorf("after Close: %v, want unavailable", r[0].Outcome)
	}
}

// TestOwnerClaims: an owner answers "booked" once booking says so, keeps a
// restored packet (from the store, at start) as the user's only one.
func TestOwnerClaims(t *testing.T) {
	f := newFixtureOwner(t, 2, 1<<40, 0, true)
	first := admit(f, demoRequests("a", "b"))
	for i, r := range first {
		if r.Outcome != grant.Issued {
			t.Fatalf("grant %d = %v, want issued", i, r.Outcome)
		}
	}
	// Booking reports a; b stays issued.
	g := first[0].Grant
	booked := grant.BookedEntry(g.ActID, g.LimitKey(), g.AwardType, g.Amount)
	booked.AppID = g.AppID
	f.adm.Restore([]grant.Booked{booked})
	again := admit(f, demoRequests("a", "b"))
	if r := again[0]; r.Outcome != grant.Repeat || !r.Booked || r.Grant.Claims() != first[0].Grant.Claims() {
		t.Errorf("repeat of a booked packet = %v booked=%v %+v, want the booked packet", r.Outcome, r.Booked, r.Grant)
	}
	if r := again[1]; r.Outcome != grant.Repeat || r.Booked || r.Grant.Claims() != first[1].Grant.Claims() {
		t.Errorf("repeat of an issued packet = %v booked=%v, want the issued packet", r.Outcome, r.Booked)
	}
	// A packet the store holds (restored at start) for a user this node
	// never granted: the grant answers it, issuing nothing.
	restored := grant.Booked{ActID: 3, Rain: "demo_rain_1_formal", AwardType: "cash", Amount: 77}
	f.adm.Restore([]grant.Booked{restored})
	r := admit(f, demoRequests("c"))[0] // the resolver hands "c" act_id 3
	if r.Outcome != grant.Repeat || !r.Booked || r.Grant.ActID != 3 || r.Grant.Amount != 77 || r.Grant.AwardType != "cash" {
		t.Errorf("grant of a restored packet = %v %+v, want repeat of act 3, cash 77, booked", r.Outcome, r.Grant)
	}
	if n := f.adm.Issued(); n != 2 {
		t.Errorf("Issued() = %d, want 2", n)
	}
}

// TestBrokerPausedPastTheWriteDeadline pauses the broker (it swallows
// produce requests) for longer than the writer's deadline: grants in flight
// are answered unavailable, never issued; a retry meanwhile is told the
// grant is in progress (its record might still have landed), not given a
// second packet; what was answered is on the stream once; and the budget
// counts the uncertain amounts as issued, so it never overspends.
func TestBrokerPausedPastTheWriteDeadline(t *testing.T) {
	timing := storage.WriterTiming{Ack: 150 * time.Millisecond, Net: 150 * time.Millisecond, Retries: 1, Backoff: 20 * time.Millisecond}
	const total = 1 << 40
	f := newFixtureTimed(t, 1, total, 0, true, timing, time.Now)
	before := admit(f, demoRequests("a", "b"))
	for i, r := range before {
		if r.Outcome != grant.Issued {
			t.Fatalf("grant %d before the pause = %v, want issued", i, r.Outcome)
		}
	}
	kc := f.kafka.EmbeddedCluster()
	var paused atomic.Bool
	paused.Store(true)
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		return nil, nil, paused.Load() // swallowed: no answer, nothing appended
	})
	during := admit(f, demoRequests("c", "d"))
	for i, r := range during {
		if r.Outcome != grant.Unavailable || r.Err == nil {
			t.Fatalf("grant %d during the pause = %v (%v), want unavailable", i, r.Outcome, r.Err)
		}
	}
	if r := admit(f, demoRequests("c"))[0]; r.Outcome != grant.InProgress {
		t.Errorf("retry during the claim = %v, want in_progress", r.Outcome)
	}
	paused.Store(false)
	after := admit(f, demoRequests("e"))[0]
	if after.Outcome != grant.Issued {
		t.Fatalf("grant after the pause = %v (%v), want issued", after.Outcome, after.Err)
	}
	f.adm.Close(context.Background())

	streamed := map[uint64]int64{}
	var streamedSum int64
	for _, rec := range records(t, f) {
		for _, g := range rec {
			if _, dup := streamed[g.ActID]; dup {
				t.Errorf("act %d on the stream twice", g.ActID)
			}
			streamed[g.ActID] = g.Amount
			streamedSum += g.Amount
		}
	}
	for _, r := range append(before, after) {
		if streamed[r.Grant.ActID] != r.Grant.Amount {
			t.Errorf("answered grant of act %d (%d) is not on the stream (%d)", r.Grant.ActID, r.Grant.Amount, streamed[r.Grant.ActID])
		}
	}
	// The lease of the grants whose write failed without proof stays open
	// (it is reclaimed at what was booked once its records can no longer
	// land): nothing is given back on a guess.
	var issued, held int64
	open := 0
	for _, l := range f.budget.Leases() {
		if l.Closed {
			issued += l.Issued
		} else {
			held += l.Amount
			open++
		}
	}
	if err := f.budget.Check(); err != nil {
		t.Fatal(err)
	}
	if open == 0 || issued+held < streamedSum || f.budget.Remaining()+issued+held != total {
		t.Errorf("leases issued %d, %d open holding %d, stream %d, remaining %d: want a lease left open, issued + held >= stream and remaining + issued + held = %d",
			issued, open, held, streamedSum, f.budget.Remaining(), int64(total))
	}
	if len(streamed) != 3 {
		t.Errorf("%d users on the stream, want 3 (a, b, e)", len(streamed))
	}
}

// TestPausedPastTheLease: a node paused between taking a grant's amount
// from its lease and the record's acknowledgement, for longer than the
// lease lives, does not answer the grant as issued (another node may
// reclaim the lease by then): it is unavailable, counted as a late
// acknowledgement, its record stays on the stream for booking to judge,
// and the lease is left open for the reclaim (its holder cannot tell what
// booking will count under it).
func TestPausedPastTheLease(t *testing.T) {
	var mu sync.Mutex
	now := time.UnixMilli(1_800_000_000_000)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	pause := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	const total = 1 << 40
	f := newFixtureTimed(t, 1, total, 0, true, storage.DefaultWriterTiming, clock)
	if r := admit(f, demoRequests("a"))[0]; r.Outcome != grant.Issued {
		t.Fatalf("grant before the pause = %v (%v), want issued", r.Outcome, r.Err)
	}
	kc := f.kafka.EmbeddedCluster()
	var once sync.Once
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		once.Do(func() { pause(ledger.LeaseTTL) }) // the node sleeps while its record is in flight
		return nil, nil, false
	})
	late := admit(f, demoRequests("b"))[0]
	if late.Outcome != grant.Unavailable || !strings.Contains(fmt.Sprint(late.Err), "lease expired") {
		t.Fatalf("grant acknowledged after the lease expired = %v (%v), want unavailable", late.Outcome, late.Err)
	}
	var text strings.Builder
	text.WriteString(promexport.Text(f.reg))
	if !strings.Contains(text.String(), "\nredrain_grant_late_acks_total 1\n") {
		t.Fatalf("want redrain_grant_late_acks_total 1 in\n%s", text.String())
	}
	// A new grant takes a new lease (the old one is past its bound).
	if r := admit(f, demoRequests("c"))[0]; r.Outcome != grant.Issued {
		t.Fatalf("grant after the pause = %v (%v), want issued", r.Outcome, r.Err)
	}
	f.adm.Close(context.Background())
	var users int
	for _, rec := range records(t, f) {
		users += len(rec)
	}
	if users != 3 {
		t.Fatalf("%d grants on the stream, want 3 (a, b's landed record, c)", users)
	}
	leases := f.budget.Leases()
	if len(leases) < 2 {
		t.Fatalf("%d leases taken, want a new one after the pause", len(leases))
	}
	// b's record landed after the lease's bound: its holder does not know
	// whether booking will take it (another node may have fenced the
	// lease), so it leaves the lease to be reclaimed at what was booked.
	if first := leases[1]; first.Closed {
		t.Fatalf("the lease with a late acknowledgement = %+v, want it left open for the reclaim", first)
	}
	if err := f.budget.Check(); err != nil {
		t.Fatal(err)
	}
}
