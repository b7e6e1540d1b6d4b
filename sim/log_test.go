package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
	"redrain/storage"
)

// topic is the grant topic: records per partition, in memory.
type topic struct {
	mu    sync.Mutex
	parts [][][]byte
	grew  chan struct{} // closed (and replaced) by every append
}

func newTopic(parts int32) *topic {
	return &topic{parts: make([][][]byte, parts), grew: make(chan struct{})}
}

func (t *topic) append(p int32, v []byte) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.parts[p] = append(t.parts[p], v)
	close(t.grew)
	t.grew = make(chan struct{})
	return int64(len(t.parts[p]) - 1)
}

func (t *topic) end(p int32) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(len(t.parts[p]))
}

// from returns partition p's records from offset on, and a channel closed
// at the next append.
func (t *topic) from(p int32, offset int64) ([][]byte, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if offset >= int64(len(t.parts[p])) {
		return nil, t.grew
	}
	return t.parts[p][offset:], t.grew
}

// writer is one node's producer of the grant topic (grant.Stream). A
// record's fate is the world's to decide (appendFate): it lands and is
// acknowledged, never lands, lands with its acknowledgement lost, or lands
// late (a produce still in flight when its node paused or died).
type writer struct {
	n *node
}

func (s *writer) Partitions() int32            { return s.n.w.parts }
func (s *writer) Partition(actID uint64) int32 { return storage.PartitionOf(actID, s.n.w.parts) }

// errProduce is a produce that failed: the record may or may not have
// landed.
var errProduce = errors.New("sim: produce failed")

func (s *writer) Append(part int32, grants []ledger.Grant) (int, error) {
	if s.n.streamClosed.Load() {
		return 0, storage.ErrStreamClosed
	}
	if err := s.n.gate(); err != nil {
		return 0, fmt.Errorf("%w: %v", errProduce, err)
	}
	var recs [][]byte
	for len(grants) > 0 {
		k := min(len(grants), ledger.GrantsPerRecordMax)
		recs = append(recs, ledger.AppendGrantRecord(nil, grants[:k]))
		grants = grants[k:]
	}
	var err error
	for _, r := range recs {
		err = errors.Join(err, s.n.w.produce(s.n, part, r))
	}
	return len(recs), err
}

// group is the booking consumer group: members join, partitions are
// spread over the members in name order, and every change of members
// ends every session (an eager rebalance). A member that stops
// heartbeating (its node paused or dead) is dropped after sessionTimeout;
// its partitions go to the others at once, even while its own session
// still runs (a zombie). Otherwise a partition's next session starts only
// once its previous holder's claim returned.
type group struct {
	w       *World
	mu      sync.Mutex
	gen     int32
	members map[string]*member
	assign  map[int32]*member // the current generation's
	holding map[int32]*member // whose claim of each partition still runs
	offsets map[int32]int64   // marked offsets
	changed chan struct{}     // closed (and replaced) by every change
}

// sessionTimeout is how long the group waits for a member's heartbeat.
const sessionTimeout = 10 * time.Second

type member struct {
	n       *node
	joined  int32 // generation joined
	session *session
}

func newGroup(w *World) *group {
	return &group{w: w, members: map[string]*member{}, assign: map[int32]*member{},
		holding: map[int32]*member{}, offsets: map[int32]int64{}, changed: make(chan struct{})}
}

// rebalanceLocked starts a new generation over the current members.
func (g *group) rebalanceLocked() {
	g.gen++
	names := make([]string, 0, len(g.members))
	for name := range g.members {
		names = append(names, name)
	}
	slices.Sort(names)
	clear(g.assign)
	for p := range g.w.parts {
		if len(names) > 0 {
			g.assign[p] = g.members[names[int(p)%len(names)]]
		}
	}
	for _, m := range g.members {
		if m.session != nil {
			m.session.cancel()
		}
	}
	var desc []string
	for p := range g.w.parts {
		if m := g.assign[p]; m != nil {
			desc = append(desc, fmt.Sprintf("%d:%s", p, m.n.owner))
		}
	}
	g.w.event("generation %d: %v", g.gen, desc)
	close(g.changed)
	g.changed = make(chan struct{})
}

// expire drops members whose node stopped heartbeating sessionTimeout ago.
func (g *group) expire(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := false
	for name, m := range g.members {
		if since, ok := m.n.silentSince(); ok && now.Sub(since) >= sessionTimeout {
			delete(g.members, name)
			if m.session != nil {
				m.session.cancel()
			}
			for p, h := range g.holding {
				if h == m {
					delete(g.holding, p)
				}
			}
			changed = true
		}
	}
	if changed {
		g.rebalanceLocked()
	}
}

// consumer is one node's handle on the group (sarama.ConsumerGroup).
type consumer struct{ n *node }

func (c consumer) Errors() <-chan error      { return nil }
func (c consumer) Close() error              { return nil }
func (c consumer) Pause(map[string][]int32)  {}
func (c consumer) Resume(map[string][]int32) {}
func (c consumer) PauseAll()                 {}
func (c consumer) ResumeAll()                {}
func (c consumer) group() *group             { return c.n.w.group }
func (c consumer) name() string              { return c.n.owner }
func (c consumer) errorf(f string, a ...any) error {
	return fmt.Errorf("sim consumer %s: "+f, append([]any{c.n.owner}, a...)...)
}

// Consume joins the group (a new member starts a generation), waits for
// this member's partitions to be free, and runs one session: a claim per
// partition until the generation ends or ctx does.
func (c consumer) Consume(ctx context.Context, _ []string, h sarama.ConsumerGroupHandler) error {
	if err := c.n.gate(); err != nil {
		return c.errorf("%v", err)
	}
	g := c.group()
	g.mu.Lock()
	m := g.members[c.name()]
	if m == nil {
		m = &member{n: c.n}
		g.members[c.name()] = m
		g.rebalanceLocked()
	}
	gen := g.gen
	m.joined = gen
	// A process that stops leaves the group (a killed one cannot: the
	// coordinator drops it once it missed its heartbeats).
	defer func() {
		if ctx.Err() == nil || c.n.down() {
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.members[c.name()] == m {
			delete(g.members, c.name())
			g.rebalanceLocked()
		}
	}()
	var mine []int32
	for p := range g.w.parts {
		if g.assign[p] == m {
			mine = append(mine, p)
		}
	}
	g.mu.Unlock()

	// A partition's previous holder lets go first (unless it was dropped).
	for {
		g.mu.Lock()
		busy := false
		for _, p := range mine {
			if h, ok := g.holding[p]; ok && h != m {
				busy = true
			}
		}
		stale := g.gen != gen || g.members[c.name()] != m
		changed := g.changed
		g.mu.Unlock()
		if stale {
			return nil
		}
		if !busy {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}

	sctx, cancel := context.WithCancel(ctx)
	s := &session{ctx: sctx, cancel: cancel, c: c, gen: gen, parts: mine}
	g.mu.Lock()
	if g.gen != gen || g.members[c.name()] != m {
		g.mu.Unlock()
		cancel()
		return nil
	}
	m.session = s
	for _, p := range mine {
		g.holding[p] = m
	}
	g.mu.Unlock()
	defer cancel()

	if err := h.Setup(s); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, p := range mine {
		g.mu.Lock()
		start := g.offsets[p]
		g.mu.Unlock()
		if back := c.n.w.redeliver(c.n, p); back > 0 {
			start = max(0, start-back)
		}
		cl := &claim{p: p, start: start, msgs: make(chan *sarama.ConsumerMessage, 64)}
		wg.Add(2)
		go func() { defer wg.Done(); cl.feed(s, c.n) }()
		go func() {
			defer wg.Done()
			_ = h.ConsumeClaim(s, cl)
			cancel() // one claim ending ends the session, as in sarama
			g.mu.Lock()
			if g.holding[p] == m {
				delete(g.holding, p)
			}
			close(g.changed)
			g.changed = make(chan struct{})
			g.mu.Unlock()
		}()
	}
	<-sctx.Done()
	wg.Wait()
	return h.Cleanup(s)
}

// session is one generation of a member (sarama.ConsumerGroupSession).
type session struct {
	ctx    context.Context
	cancel context.CancelFunc
	c      consumer
	gen    int32
	parts  []int32
}

func (s *session) Claims() map[string][]int32 { return map[string][]int32{storage.GrantTopic: s.parts} }
func (s *session) MemberID() string           { return s.c.name() }
func (s *session) GenerationID() int32        { return s.gen }
func (s *session) Commit()                    {}
func (s *session) Context() context.Context   { return s.ctx }
func (s *session) ResetOffset(_ string, p int32, off int64, _ string) {
	s.MarkOffset("", p, off, "")
}
func (s *session) MarkMessage(m *sarama.ConsumerMessage, _ string) {
	s.MarkOffset("", m.Partition, m.Offset+1, "")
}

// MarkOffset keeps the offset while the session is current (offsets
// commit lazily; a dropped member's are refused by the coordinator).
func (s *session) MarkOffset(_ string, p int32, off int64, _ string) {
	g := s.c.group()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gen == s.gen && s.ctx.Err() == nil && off > g.offsets[p] {
		g.offsets[p] = off
	}
}

// claim delivers one partition's records from start on.
type claim struct {
	p     int32
	start int64
	msgs  chan *sarama.ConsumerMessage
}

func (cl *claim) Topic() string                            { return storage.GrantTopic }
func (cl *claim) Partition() int32                         { return cl.p }
func (cl *claim) InitialOffset() int64                     { return cl.start }
func (cl *claim) HighWaterMarkOffset() int64               { return 0 }
func (cl *claim) Messages() <-chan *sarama.ConsumerMessage { return cl.msgs }

// feed sends the partition's records into msgs until the session ends,
// holding them back while the node is paused, then closes msgs.
func (cl *claim) feed(s *session, n *node) {
	defer close(cl.msgs)
	next := cl.start
	for {
		recs, grew := n.w.topic.from(cl.p, next)
		for _, v := range recs {
			if n.gate() != nil {
				return
			}
			m := &sarama.ConsumerMessage{Topic: storage.GrantTopic, Partition: cl.p, Offset: next, Value: v,
				Key: storage.ShardKey(cl.p), Timestamp: time.Now()}
			select {
			case cl.msgs <- m:
				next++
			case <-s.ctx.Done():
				return
			}
		}
		select {
		case <-grew:
		case <-s.ctx.Done():
			return
		}
	}
}
