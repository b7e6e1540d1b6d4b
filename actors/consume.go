package actors

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
	"redrain/storage"
)

// Run consumes the grant topic as a member of the booking group until ctx
// ends. Partitions rebalance over the live nodes; offsets are committed
// after each booked batch, and redelivery after a crash books nothing twice.
func (b *Booker) Run(ctx context.Context) error {
	cfg := storage.SaramaConfig("redrain-booker")
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	// After members die, a rebalance waits for them up to this long before
	// the survivors (or restarted nodes) get their partitions; sarama's 60 s
	// default kept a restarted cluster from booking (and so from being
	// ready) for over a minute.
	cfg.Consumer.Group.Rebalance.Timeout = 15 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = time.Second
	cfg.Consumer.Fetch.Default = 4 << 20
	cfg.Consumer.Return.Errors = false
	group, err := sarama.NewConsumerGroup(b.brokers, BookingGroup, cfg)
	if err != nil {
		return fmt.Errorf("%w: consumer group: %v", storage.ErrUnavailable, err)
	}
	defer group.Close()
	go b.commitLoop(ctx)
	h := &claimHandler{b: b}
	for ctx.Err() == nil {
		if err := group.Consume(ctx, []string{storage.GrantTopic}, h); err != nil && ctx.Err() == nil {
			b.log.Warn("booking: consume", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

type claimHandler struct{ b *Booker }

// groupReq is one partition's batch waiting for a shared transaction.
type groupReq struct {
	grants []ledger.Grant
	done   chan error
}

// bookGrouped books a partition's batch in the next shared transaction.
func (b *Booker) bookGrouped(ctx context.Context, grants []ledger.Grant) error {
	r := &groupReq{grants: grants, done: make(chan error, 1)}
	select {
	case b.group <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The session ended; the claim will not reuse grants, and offsets
		// are committed only after done, so nothing is marked.
		return ctx.Err()
	}
}

// commitLoop books what every claimed partition has gathered in one
// transaction: group commit across partitions. Measured: with each of 8
// partitions committing on its own, transactions averaged 6 grants (9947
// for 61k grants) and their fixed costs dominated booking. The first batch
// after a quiet spell goes alone at once; a backlog shares transactions.
func (b *Booker) commitLoop(ctx context.Context) {
	var reqs []*groupReq
	var merged []ledger.Grant
	var spent time.Duration // booking time since the last yield
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-b.group:
			reqs = append(reqs[:0], r)
		}
		spent = b.yieldTo(ctx, spent)
		start := time.Now()
		b.commit(ctx, b.fill(reqs), &merged)
		spent += time.Since(start)
	}
}

// yieldTo lets the grant path run first while it is busy: booking sleeps
// bookYieldRatio times what it spent since its last pause (at most
// bookYieldMax a time), so during a burst it takes about a quarter of its
// loop's time and lags, and once admission goes quiet it books flat out
// and drains. Grants only wait longer to be booked; nothing is skipped.
func (b *Booker) yieldTo(ctx context.Context, spent time.Duration) time.Duration {
	busy := b.busy.Load()
	if busy == nil || spent <= 0 || !(*busy)() {
		return spent
	}
	pause := min(spent*bookYieldRatio, bookYieldMax)
	b.Yielded.Add(pause.Nanoseconds())
	select {
	case <-ctx.Done():
	case <-time.After(pause):
	}
	return 0
}

// fill adds to reqs whatever other partitions have gathered meanwhile, up
// to bookBatchMax grants.
func (b *Booker) fill(reqs []*groupReq) []*groupReq {
	n := len(reqs[0].grants)
	for n < bookBatchMax {
		select {
		case r := <-b.group:
			reqs = append(reqs, r)
			n += len(r.grants)
		default:
			return reqs
		}
	}
	return reqs
}

// commit books reqs in one transaction, or each partition's batch alone if
// the whole breaks a money invariant (only the one that breaks it stops).
func (b *Booker) commit(ctx context.Context, reqs []*groupReq, merged *[]ledger.Grant) {
	if len(reqs) == 1 {
		_, err := b.Book(ctx, reqs[0].grants)
		reqs[0].done <- err
		return
	}
	*merged = (*merged)[:0]
	for _, r := range reqs {
		*merged = append(*merged, r.grants...)
	}
	_, err := b.Book(ctx, *merged)
	if isMoneyErr(err) {
		for _, r := range reqs {
			_, e := b.Book(ctx, r.grants)
			r.done <- e
		}
		return
	}
	for _, r := range reqs {
		r.done <- err
	}
}

func (h *claimHandler) Setup(sess sarama.ConsumerGroupSession) error {
	parts := append([]int32(nil), sess.Claims()[storage.GrantTopic]...)
	slices.Sort(parts)
	h.b.claims.Store(&parts)
	return nil
}

func (h *claimHandler) Cleanup(sarama.ConsumerGroupSession) error {
	h.b.claims.Store(&[]int32{})
	return nil
}

// Claims returns the grant topic partitions this node books now.
func (b *Booker) Claims() []int32 {
	if p := b.claims.Load(); p != nil {
		return *p
	}
	return nil
}

// ConsumeClaim books one partition. It takes what has arrived, up to
// bookBatchMax grants, books it, commits, and repeats: one record alone is
// booked at once, a backlog shares transactions (no timer).
func (h *claimHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	b := h.b
	ctx := sess.Context()
	grants := make([]ledger.Grant, 0, bookBatchMax)
	for {
		var next *sarama.ConsumerMessage
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			next = m
		}
		grants = grants[:0]
		// last is the last record whose grants are in the batch; bad is an
		// undecodable record after it.
		var last, bad *sarama.ConsumerMessage
		var badErr error
	gather:
		for {
			var err error
			if grants, err = ledger.DecodeGrantRecord(grants, next.Value); err != nil {
				bad, badErr = next, err
				break
			}
			last = next
			if len(grants) >= bookBatchMax {
				break
			}
			select {
			case m, ok := <-claim.Messages():
				if !ok {
					break gather
				}
				next = m
			default:
				break gather
			}
		}
		// The records before an undecodable one hold acknowledged grants
		// too: book and commit them before stopping.
		if last != nil && !h.book(sess, grants, last) {
			return nil
		}
		if bad != nil {
			// A record that cannot be read holds acknowledged grants:
			// skipping it would lose them. Stop this partition loudly.
			b.stop(ctx, "undecodable grant record", bad, badErr)
			return nil
		}
	}
}

// book books the grants gathered up to last and commits last's offset. It
// retries what may succeed later and reports false when the session ended
// or booking stopped on a broken invariant.
func (h *claimHandler) book(sess sarama.ConsumerGroupSession, grants []ledger.Grant, last *sarama.ConsumerMessage) bool {
	b, ctx := h.b, sess.Context()
	for {
		err := b.bookGrouped(ctx, grants)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		if isMoneyErr(err) {
			b.stop(ctx, "money invariant broken", last, err)
			return false
		}
		b.log.Warn("booking: retrying batch", "partition", last.Partition, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	sess.MarkMessage(last, "")
	sess.Commit()
	return true
}

// stop halts booking of a partition for good: the node reports it on
// /readyz and in metrics, and it is never retried with the same memory. It
// returns when the session ends.
func (b *Booker) stop(ctx context.Context, why string, at *sarama.ConsumerMessage, err error) {
	b.mu.Lock()
	b.broken = fmt.Errorf("%s at partition %d offset %d: %w", why, at.Partition, at.Offset, err)
	b.mu.Unlock()
	b.log.Error("booking stopped: "+why, "partition", at.Partition, "offset", at.Offset, "err", err)
	<-ctx.Done()
}

// HighWaterMarks returns the next offset of every grant topic partition.
func HighWaterMarks(client sarama.Client) (map[int32]int64, error) {
	parts, err := client.Partitions(storage.GrantTopic)
	if err != nil {
		return nil, fmt.Errorf("%w: partitions: %v", storage.ErrUnavailable, err)
	}
	out := make(map[int32]int64, len(parts))
	for _, p := range parts {
		if out[p], err = client.GetOffset(storage.GrantTopic, p, sarama.OffsetNewest); err != nil {
			return nil, fmt.Errorf("%w: offset: %v", storage.ErrUnavailable, err)
		}
	}
	return out, nil
}

// Committed returns the booking group's next offset to book per partition
// (the log start where it has committed nothing).
func Committed(client sarama.Client) (map[int32]int64, error) {
	parts, err := client.Partitions(storage.GrantTopic)
	if err != nil {
		return nil, fmt.Errorf("%w: partitions: %v", storage.ErrUnavailable, err)
	}
	// The admin shares the client: closing it would close the client,
	// which the caller owns.
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("%w: admin: %v", storage.ErrUnavailable, err)
	}
	res, err := admin.ListConsumerGroupOffsets(BookingGroup, map[string][]int32{storage.GrantTopic: parts})
	if err != nil {
		return nil, fmt.Errorf("%w: group offsets: %v", storage.ErrUnavailable, err)
	}
	out := make(map[int32]int64, len(parts))
	for _, p := range parts {
		if blk := res.GetBlock(storage.GrantTopic, p); blk != nil && blk.Offset >= 0 {
			out[p] = blk.Offset
			continue
		}
		if out[p], err = client.GetOffset(storage.GrantTopic, p, sarama.OffsetOldest); err != nil {
			return nil, fmt.Errorf("%w: offset: %v", storage.ErrUnavailable, err)
		}
	}
	return out, nil
}

// LagOf returns, per partition, the grant records in Kafka that the booking
// group has not committed yet.
func LagOf(client sarama.Client) (map[int32]int64, error) {
	hwm, err := HighWaterMarks(client)
	if err != nil {
		return nil, err
	}
	done, err := Committed(client)
	if err != nil {
		return nil, err
	}
	lag := make(map[int32]int64, len(hwm))
	for p, h := range hwm {
		lag[p] = max(h-done[p], 0)
	}
	return lag, nil
}
