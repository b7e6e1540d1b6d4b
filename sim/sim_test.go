package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"redrain/actors"
	"redrain/booking"
	"redrain/grant"
	"redrain/ledger"
	"redrain/reconcile"
)

var (
	seeds   = flag.Int("sim.seeds", 20, "how many seeds to run (from -sim.first)")
	first   = flag.Uint64("sim.first", 1, "the first seed of -sim.seeds")
	oneSeed = flag.Uint64("sim.seed", 0, "replay this one seed (up to -sim.tries times, until it fails), with its log")
	tries   = flag.Int("sim.tries", 20, "how many times -sim.seed is tried")
)

// TestMain runs the simulation on one processor: a bubble's goroutines
// then run one at a time, in an order that a replay of the seed nearly
// always repeats (see replay). Seeds run one after another; `make sim`
// runs two processes for two cores.
func TestMain(m *testing.M) {
	runtime.GOMAXPROCS(1)
	os.Exit(m.Run())
}

// TestSimulation runs -sim.seeds seeds (or -sim.seed alone) and reports
// every seed whose run broke an invariant, with the command that replays
// it.
func TestSimulation(t *testing.T) {
	if *oneSeed != 0 {
		replay(t, *oneSeed)
		return
	}
	for i := range uint64(*seeds) {
		seed := *first + i
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cfg, failures, _, _ := play(t, seed)
			if len(failures) > 0 {
				t.Fatalf("%v\nbroke %d invariants:\n%s\nreplay: go test ./sim -run 'TestSimulation' -sim.seed=%d -v",
					cfg, len(failures), strings.Join(failures[:min(len(failures), 20)], "\n"), seed)
			}
		})
	}
}

// play runs one seed in a bubble of its own and returns its shape, the
// broken invariants, its events and the components' log.
func play(t *testing.T, seed uint64) (cfg Config, failures, events []string, logs *bytes.Buffer) {
	logs = &bytes.Buffer{}
	synctest.Test(t, func(t *testing.T) {
		cfg = ConfigOf(seed)
		failures, events = run(t, cfg, logs)
	})
	return cfg, failures, events, logs
}

// replay runs one seed again and again (-sim.tries) until it breaks an
// invariant, then prints that run's log and events. The requests and
// faults are the seed's every time; on one processor the components'
// interleaving nearly always is too (the trace digest shows when a run
// went another way: the runtime still picks at random among ready select
// cases and orders map iterations), so a failure found among many seeds
// shows again within a few tries.
func replay(t *testing.T, seed uint64) {
	digests := map[[32]byte]int{}
	var last []string
	for try := 1; try <= *tries; try++ {
		cfg, failures, events, logs := play(t, seed)
		last = events
		digest := sha256.Sum256([]byte(strings.Join(events, "\n")))
		digests[digest]++
		if len(failures) == 0 {
			continue
		}
		os.Stderr.Write(logs.Bytes())
		t.Logf("events:\n%s", strings.Join(events, "\n"))
		t.Fatalf("%v\nbroke %d invariants (try %d, trace digest %x):\n%s", cfg, len(failures), try, digest[:8], strings.Join(failures, "\n"))
	}
	t.Logf("events of the last try:\n%s", strings.Join(last, "\n"))
	t.Logf("seed %d passed %d tries (%d distinct traces)", seed, *tries, len(digests))
}

// run plays one seed inside a synctest bubble: the schedule of requests
// and faults, an audit after every step, then a clean stop and the final
// checks. It returns the broken invariants.
func run(t *testing.T, cfg Config, logOut io.Writer) (failures, events []string) {
	w, err := newWorld(cfg, logOut)
	if err != nil {
		t.Fatal(err)
	}
	// A run that cannot end (a deadlock among the components, while some
	// timer keeps virtual time going) stops the test binary with every
	// goroutine's stack and the seed.
	watchdog := time.AfterFunc(cfg.Duration+time.Hour, func() {
		panic(fmt.Sprintf("simulation %v: no end after an hour of simulated time; replay: go test ./sim -run TestSimulation -sim.seed=%d -v", cfg, cfg.Seed))
	})
	defer watchdog.Stop()
	r := rand.New(rand.NewPCG(cfg.Seed, 0xfa17))
	names := make([]string, cfg.Nodes)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
		w.start(names[i])
	}
	var clients sync.WaitGroup
	// The group coordinator drops members that stopped heartbeating.
	coordinator := make(chan struct{})
	var coordinated sync.WaitGroup
	coordinated.Add(1)
	go func() {
		defer coordinated.Done()
		for {
			select {
			case <-coordinator:
				return
			case <-time.After(time.Second):
				w.group.expire(time.Now())
				w.operate()
			}
		}
	}()
	step := 0
	check := func(what string) {
		step++
		synctest.Wait()
		w.auditNow(what, false)
	}
	end := time.Now().Add(cfg.Duration)
	for time.Now().Before(end) && len(w.failures) == 0 {
		time.Sleep(time.Duration(100+r.IntN(900)) * time.Millisecond)
		name := names[r.IntN(len(names))]
		w.mu.Lock()
		n := w.nodes[name]
		w.mu.Unlock()
		switch k := r.IntN(100); {
		case k < 80: // a client's request: a batch, with repeats
			users := make([]int, 1+r.IntN(8))
			for i := range users {
				users[i] = r.IntN(cfg.Users)
			}
			clients.Add(1)
			go func() { defer clients.Done(); n.grant(users) }()
		case k < 84:
			n.kill()
			if r.IntN(4) > 0 {
				d := time.Duration(r.IntN(20_000)) * time.Millisecond
				clients.Add(1)
				go func() { defer clients.Done(); time.Sleep(d); w.restart(name) }()
			}
		case k < 88:
			n.pause()
			d := time.Duration(r.IntN(30_000)) * time.Millisecond
			clients.Add(1)
			go func() { defer clients.Done(); time.Sleep(d); n.resume() }()
		case k < 91:
			w.storeDown.Store(true)
			w.event("store down")
			d := time.Duration(r.IntN(20_000)) * time.Millisecond
			clients.Add(1)
			go func() { defer clients.Done(); time.Sleep(d); w.storeDown.Store(false); w.event("store up") }()
		case k < 96 && k >= 94:
			w.redis.FlushAll()
			w.event("redis flushed")
		case k == 96:
			w.poison(int32(r.IntN(int(cfg.Parts))))
		case k < 94 && len(names) > 1:
			other := names[r.IntN(len(names))]
			if other != name {
				w.setCut(name, other, true)
				w.event("cut %s %s", name, other)
				d := time.Duration(r.IntN(20_000)) * time.Millisecond
				clients.Add(1)
				go func() {
					defer clients.Done()
					time.Sleep(d)
					w.setCut(name, other, false)
					w.event("heal %s %s", name, other)
				}()
			}
		}
		check(fmt.Sprintf("step %d", step))
	}
	// Heal everything, restart every name that is down, let booking and
	// the reclaim finish, then stop cleanly and check the end state.
	clients.Wait()
	w.storeDown.Store(false)
	w.mu.Lock()
	clear(w.cuts)
	var live []*node
	for _, name := range names {
		n := w.nodes[name]
		live = append(live, n)
	}
	w.mu.Unlock()
	for i, n := range live {
		n.resume()
		if n.gate() != nil {
			live[i] = w.start(n.name)
		}
	}
	w.event("healed")
	w.settle(2 * time.Minute)
	check("healed")
	for _, n := range live {
		n.stopGrants()
	}
	for _, n := range live {
		n.stopRest()
	}
	// Records still in flight at the stop (a forwarded batch whose sender
	// gave up) may have landed after booking stopped, and a lease whose
	// settling at the stop failed (its partitions were moving) is left to
	// the reclaim: the next start books the ones and reclaims the others.
	if !w.drained() || w.openLeases() > 0 {
		w.event("records to book or leases to reclaim after the stop: starting %s once more", names[0])
		n := w.start(names[0])
		w.settle(2 * time.Minute)
		n.stopGrants()
		n.stopRest()
	}
	w.mu.Lock()
	all := slices.Clone(w.all)
	w.mu.Unlock()
	close(coordinator)
	coordinated.Wait()
	for _, n := range all {
		n.kill() // every goroutine of a dead incarnation ends
		n.bg.Wait()
	}
	w.net.Wait()
	synctest.Wait()
	w.final()
	return w.failures, append(w.events, w.outcome()...)
}

// outcome lists what the clients were answered and what reached the
// topic, in a stable order: with the events, what a replay must repeat.
func (w *World) outcome() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, k := range slices.Sorted(maps.Keys(w.packets)) {
		p := w.packets[k]
		out = append(out, fmt.Sprintf("answered %s %s %d by %s", k, p.award, p.amount, p.node))
	}
	for _, k := range slices.Sorted(maps.Keys(w.landed)) {
		for _, l := range w.landed[k] {
			out = append(out, fmt.Sprintf("landed %s %d lease %d by %s at %d/%d %s", k, l.g.Amount, l.g.LeaseID, l.node, l.part, l.offset, l.at.Format("15:04:05.000")))
		}
	}
	return out
}

// settle waits until booking has booked the whole topic and no lease of a
// dead incarnation is open, or d passed.
func (w *World) settle(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		ctx := context.Background()
		drained := w.drained()
		open, err := actors.OpenLeasesWhere(ctx, w.audit, func(l *ledger.Lease) bool { return !w.running(l.Owner, l.Incarnation) })
		if drained && err == nil && len(open) == 0 {
			return
		}
	}
}

// drained tells whether the store has booked the whole topic.
func (w *World) drained() bool {
	booked, err := booking.Booked(context.Background(), w.audit, w.parts)
	if err != nil {
		return false
	}
	for p := range w.parts {
		if booked[p] < w.topic.end(p) {
			return false
		}
	}
	return true
}

// openLeases counts the open leases in the store (-1: unknown).
func (w *World) openLeases() int {
	open, err := actors.OpenLeasesWhere(context.Background(), w.audit, func(*ledger.Lease) bool { return true })
	if err != nil {
		return -1
	}
	return len(open)
}

// running tells whether incarnation inc of name runs: neither killed nor
// stopped. A stopped one's leases that its stop could not settle (a store
// error while it listed them) are the reclaim's, which settle waits for.
func (w *World) running(name string, inc uint64) bool {
	w.mu.Lock()
	n := w.nodes[name]
	w.mu.Unlock()
	return n != nil && n.inc == inc && !n.stoppedOrDown()
}

// auditNow runs the store's audit (invariants 1-6) as of now: the live
// audit while booking may lag, the strict one once it has drained (end).
func (w *World) auditNow(what string, drained bool) {
	audit := reconcile.RunLive
	if drained {
		audit = reconcile.Run
	}
	rep, err := audit(context.Background(), w.audit)
	if err != nil {
		w.fail("%s: audit: %v", what, err)
		return
	}
	if !rep.OK {
		for _, c := range rep.Checks {
			if !c.OK {
				w.fail("%s: audit check %s failed: %v", what, c.Name, c.Violations)
			}
		}
	}
}

// final checks the end state: every packet a client was answered is
// booked exactly once at its amount in its user's account, nothing is
// booked that no record holds, no lease is open, and the audit passes.
func (w *World) final() {
	w.auditNow("end", true)
	ctx := context.Background()
	booked := map[string]int64{}
	err := booking.ScanAccounts(ctx, w.audit, func(a *ledger.Account) (bool, error) {
		entries, err := booking.AllEntries(ctx, w.audit, a)
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			if _, dup := booked[e.LimitKey]; dup {
				w.fail("%s booked twice", e.LimitKey)
			}
			booked[e.LimitKey] = e.Amount
			found := false
			w.mu.Lock()
			for _, l := range w.landed[e.LimitKey] {
				found = found || l.g.Amount == e.Amount
			}
			w.mu.Unlock()
			if !found {
				w.fail("%s booked %d for act %d, which no record holds", e.LimitKey, e.Amount, a.ActID)
			}
		}
		return true, nil
	})
	if err != nil {
		w.fail("scanning accounts: %v", err)
	}
	w.mu.Lock()
	packets := w.packets
	w.mu.Unlock()
	for k, p := range packets {
		if amount, ok := booked[k]; !ok {
			w.fail("%s answered %d by %s, never booked", k, p.amount, p.node)
		} else if amount != p.amount {
			w.fail("%s answered %d by %s, booked %d", k, p.amount, p.node, amount)
		}
	}
	if !w.drained() {
		w.fail("booking did not book the whole topic")
	}
	parked, err := booking.ParkedRecords(ctx, w.audit)
	if err != nil {
		w.fail("listing parked records: %v", err)
	}
	w.mu.Lock()
	for k := range w.poisoned {
		if !slices.ContainsFunc(parked, func(p booking.Parked) bool { return int64(p.Partition) == k[0] && p.Offset == k[1] }) {
			w.failures = append(w.failures, fmt.Sprintf("the poisoned record at %d/%d was never parked", k[0], k[1]))
		}
	}
	w.mu.Unlock()
	open, err := actors.OpenLeasesWhere(ctx, w.audit, func(*ledger.Lease) bool { return true })
	if err != nil {
		w.fail("listing leases: %v", err)
	}
	for _, l := range open {
		w.fail("lease %s/%d of %s/%d still open at the end (%d issued of %d)", l.BudgetID, l.ID, l.Owner, l.Incarnation, l.Issued, l.Amount)
	}
	if len(w.failures) > 0 {
		// What the topic holds per lease, to read a failure by.
		w.mu.Lock()
		per := map[string][]string{}
		for k, ls := range w.landed {
			for _, l := range ls {
				key := fmt.Sprintf("%s/%d", l.g.BudgetID, l.g.LeaseID)
				per[key] = append(per[key], fmt.Sprintf("%s %d by %s at %d/%d %s (booked %d)", k, l.g.Amount, l.node, l.part, l.offset, l.at.Format("15:04:05.000"), booked[k]))
			}
		}
		w.mu.Unlock()
		for _, k := range slices.Sorted(maps.Keys(per)) {
			w.event("landed under %s: %v", k, per[k])
		}
		if rep, err := reconcile.Run(ctx, w.audit); err == nil {
			w.event("fenced: %+v", rep.Fenced)
		}
	}
}

// keep the grant package's outcomes in the log readable.
var _ = grant.Issued
