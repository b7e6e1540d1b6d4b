package grant_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"redrain/grant"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/metrics/promexport"
	"redrain/tokens"
)

// TestForwardCodecRoundTrip: a batch and its answers cross the wire
// unchanged, and a truncated or altered one is refused, never misread.
func TestForwardCodecRoundTrip(t *testing.T) {
	reqs := []grant.Request{
		{AppID: 7, UserID: "u-1", ActivityID: "newyear", SceneID: "lobby", RainID: 3},
		{AppID: 1<<32 - 1, UserID: "", ActivityID: "a", SceneID: "b", RainID: 1 << 60},
	}
	ids := []uint64{42, 1<<64 - 1}
	body := grant.AppendForward(nil, 5, reqs, ids)
	p, gotReqs, gotIDs, err := grant.DecodeForward(body)
	if err != nil || p != 5 || !reflect.DeepEqual(gotReqs, reqs) || !reflect.DeepEqual(gotIDs, ids) {
		t.Fatalf("DecodeForward = %d %+v %v %v", p, gotReqs, gotIDs, err)
	}
	for n := range len(body) {
		if _, _, _, err := grant.DecodeForward(body[:n]); err == nil {
			t.Errorf("a batch cut to %d of %d bytes decoded", n, len(body))
		}
	}

	g := ledger.Grant{AppID: 7, ActID: 42, UserID: "u-1", ActivityID: "newyear", SceneID: "lobby", RainID: 3, Stage: tokens.StageGray,
		AwardType: "cash", Asset: "CNY", Amount: 88, BudgetID: "b1", LeaseID: 9, OpenTime: 1000, IssuedAt: 2000}
	res := []grant.Result{
		{Outcome: grant.Issued, Grant: g},
		{Outcome: grant.Repeat, Grant: g, Booked: true},
		{Outcome: grant.NoAward, Grant: ledger.Grant{ActID: 43, ActivityID: "newyear", SceneID: "lobby", RainID: 3}},
		{Outcome: grant.Unavailable, Err: grant.ErrNotOwner},
		{Outcome: grant.Unavailable, Err: errors.New("kafka: down")},
		{Outcome: grant.BudgetExhausted},
	}
	wire := grant.AppendAnswers(nil, res)
	// The sender holds each grant as it built it; the answer carries what
	// the owner decided.
	got := make([]grant.Result, len(res))
	for i := range res {
		b := res[i].Grant
		b.AppID, b.Stage, b.AwardType, b.Asset, b.BudgetID = 0, 0, "", "", ""
		b.Amount, b.LeaseID, b.OpenTime, b.IssuedAt = 0, 0, 0, 0
		got[i].Grant = b
	}
	if err := grant.DecodeAnswers(wire, got); err != nil {
		t.Fatal(err)
	}
	for i := range res {
		w, r := res[i], got[i]
		if r.Outcome != w.Outcome || r.Booked != w.Booked || r.Grant != w.Grant || (r.Err == nil) != (w.Err == nil) ||
			(w.Err != nil && r.Err.Error() != w.Err.Error()) {
			t.Errorf("answer %d = %+v, want %+v", i, r, w)
		}
	}
	if !errors.Is(got[3].Err, grant.ErrNotOwner) {
		t.Errorf("not-owner answer lost its meaning: %v", got[3].Err)
	}
	if err := grant.DecodeAnswers(wire, make([]grant.Result, len(res)-1)); err == nil {
		t.Error("answers for another batch size decoded")
	}
	for n := range len(wire) {
		if err := grant.DecodeAnswers(wire[:n], make([]grant.Result, len(res))); err == nil {
			t.Errorf("answers cut to %d of %d bytes decoded", n, len(wire))
		}
	}
}

// FuzzDecodeForward: no input makes the decoders panic, and what decodes
// survives an encoding round trip unchanged.
func FuzzDecodeForward(f *testing.F) {
	f.Add(grant.AppendForward(nil, 1, []grant.Request{{AppID: 1, UserID: "u", ActivityID: "a", SceneID: "s", RainID: 1}}, []uint64{9}))
	f.Add(grant.AppendAnswers(nil, []grant.Result{{Outcome: grant.Shed}, {Outcome: grant.Unavailable, Err: errors.New("x")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, reqs, ids, err := grant.DecodeForward(b); err == nil {
			p2, reqs2, ids2, err := grant.DecodeForward(grant.AppendForward(nil, p, reqs, ids))
			if err != nil || p2 != p || !reflect.DeepEqual(reqs2, reqs) || !reflect.DeepEqual(ids2, ids) {
				t.Errorf("%x: round trip gave %d %+v %v %v, want %d %+v %v", b, p2, reqs2, ids2, err, p, reqs, ids)
			}
		}
		for n := range 3 {
			_ = grant.DecodeAnswers(b, make([]grant.Result, n))
		}
	})
}

// tenure is a test's hold on a shard.
type tenure struct{ valid atomic.Bool }

func (t *tenure) Valid() bool { return t.valid.Load() }

// TestOwnDisown follows one shard through a node's life as booking moves
// its partition: unowned, its grants are answered unavailable (no peers
// here); owned, it restores the store's packets first and decides nothing
// until then; it stops deciding the moment its tenure is no longer
// confirmed, and for good once disowned.
func TestOwnDisown(t *testing.T) {
	f := newFixtureOwner(t, 1, 1<<40, 0, true)
	reg := &metrics.Registry{}
	adm := grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: f.camp,
		Resolver: &seqResolver{ids: map[string]uint64{}}, Stream: f.stream, Leases: f.budget,
		Node: "n-test", Incarnation: 1, Metrics: reg, Clock: time.Now})
	adm.SetCatalog(f.catalog)
	t.Cleanup(func() { adm.Close(context.Background()) })
	one := func(user string) grant.Result {
		res := make([]grant.Result, 1)
		adm.Admit(demoRequests(user), res)
		return res[0]
	}
	if r := one("a"); r.Outcome != grant.Unavailable {
		t.Fatalf("grant on a shard nobody owns here = %v, want unavailable", r.Outcome)
	}

	// Booking took the partition over; the store holds a packet of act 2
	// ("b" to the resolver, which bound "a" to 1 already).
	ten := &tenure{}
	ten.valid.Store(true)
	release := make(chan struct{})
	adm.Own(0, ten, func(context.Context) ([]grant.Booked, error) {
		<-release
		return []grant.Booked{{ActID: 2, Rain: "demo_rain_1_formal", AwardType: "cash", Amount: 55}}, nil
	})
	if r := one("a"); r.Outcome != grant.Unavailable {
		t.Errorf("grant while the shard restores = %v, want unavailable", r.Outcome)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	var r grant.Result
	for r = one("a"); r.Outcome == grant.Unavailable && time.Now().Before(deadline); r = one("a") {
		time.Sleep(10 * time.Millisecond)
	}
	if r.Outcome != grant.Issued {
		t.Fatalf("grant on an owned shard = %v (%v), want issued", r.Outcome, r.Err)
	}
	if r := one("b"); r.Outcome != grant.Repeat || !r.Booked || r.Grant.Amount != 55 {
		t.Errorf("grant of a restored packet = %v %+v, want the booked packet of 55", r.Outcome, r.Grant)
	}

	ten.valid.Store(false)
	if r := one("c"); r.Outcome != grant.Unavailable {
		t.Errorf("grant under an unconfirmed tenure = %v, want unavailable", r.Outcome)
	}
	ten.valid.Store(true)
	if r := one("c"); r.Outcome != grant.Issued {
		t.Errorf("grant once the tenure is confirmed again = %v, want issued", r.Outcome)
	}
	adm.Disown(0)
	if r := one("c"); r.Outcome != grant.Unavailable {
		t.Errorf("grant after Disown = %v, want unavailable", r.Outcome)
	}
	var text strings.Builder
	text.WriteString(promexport.Text(reg))
	if !strings.Contains(text.String(), "\nredrain_grant_claims 0\n") {
		t.Errorf("claims held after Disown, want 0:\n%s", text.String())
	}
}

// TestForwardedAnswersAsTheOwner: a grant sent to a node that does not own
// the user's shard is answered exactly as the owner answers it, before
// and after, and neither ever issues a second packet.
func TestForwardedAnswersAsTheOwner(t *testing.T) {
	f := newFixture(t, 4, 1<<40, 0)
	var users []string
	for i := range 200 {
		users = append(users, fmt.Sprintf("f%d", i))
	}
	half := len(users) / 2
	viaFront := admit(f, demoRequests(users[:half]...))
	direct := make([]grant.Result, len(users)-half)
	f.owner.Admit(demoRequests(users[half:]...), direct)
	first := append(viaFront, direct...)
	for i, r := range first {
		if r.Outcome != grant.Issued {
			t.Fatalf("grant %d = %v (%v), want issued", i, r.Outcome, r.Err)
		}
	}
	// Every user again, through both nodes.
	fromFront := admit(f, demoRequests(users...))
	fromOwner := make([]grant.Result, len(users))
	f.owner.Admit(demoRequests(users...), fromOwner)
	for i := range users {
		want := first[i].Grant.Claims()
		for _, r := range []grant.Result{fromFront[i], fromOwner[i]} {
			if r.Outcome != grant.Repeat || r.Grant.Claims() != want {
				t.Errorf("user %s: %v %+v, want a repeat of %+v", users[i], r.Outcome, r.Grant.Claims(), want)
			}
		}
	}
	if n := len(records(t, f)); n == 0 {
		t.Fatal("no records")
	}
	seen := map[uint64]bool{}
	for _, rec := range records(t, f) {
		for _, g := range rec {
			if seen[g.ActID] {
				t.Errorf("act %d on the stream twice", g.ActID)
			}
			seen[g.ActID] = true
		}
	}
	if len(seen) != len(users) {
		t.Errorf("%d users on the stream, want %d", len(seen), len(users))
	}
}
