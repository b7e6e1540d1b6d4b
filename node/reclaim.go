package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/IBM/sarama"

	"redrain/actors"
	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
)

// Leases of a node that renews them no more (gone, paused, cut off) are
// reclaimed by any node, ledger.LeaseReclaimGrace after they expired:
//
//  1. the topic's end offsets are read: every grant the holder answered
//     was acknowledged before the expiry, so it is below them;
//  2. each partition's booking owner fences the lease from the larger of
//     that offset and its own next one (booking.Fence, through the
//     fenceActor of the node that books it): its grants in later records
//     (the holder's, after it stopped renewing; never answered) are
//     refused and reported;
//  3. once every partition has booked up to its fence, what was booked
//     under the lease is all it will ever have booked, and the lease
//     closes at that through its budget grain.
//
// Every step is idempotent (a fence drawn holds; a closed lease stays
// closed), so every node runs the loop and a round cut short is done again.

// fenceActor fences leases on the partitions a node books.
const fenceActor = "redrain-fences"

const (
	// reclaimEvery is how often a node looks for leases to reclaim (with
	// up to as much again of jitter, so nodes do not all go at once).
	reclaimEvery = 2 * ledger.LeaseRenewEvery
	// reclaimBookedWithin bounds the wait for the partitions to book up to
	// their fences in one round.
	reclaimBookedWithin = 30 * time.Second
	// fenceTimeout bounds one partition's fence.
	fenceTimeout = 10 * time.Second
)

// reclaimLoop reclaims expired leases until ctx ends.
func (n *Node) reclaimLoop(ctx context.Context) {
	var client sarama.Client
	defer func() {
		if client != nil {
			_ = client.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(reclaimEvery + rand.N(reclaimEvery)):
		}
		if client == nil {
			c, err := sarama.NewClient(n.kafka.Brokers, storage.SaramaConfig("redrain-reclaim"))
			if err != nil {
				n.log.Warn("lease reclaim: kafka client", "err", err)
				continue
			}
			client = c
		}
		if err := n.reclaimExpired(ctx, client); err != nil && ctx.Err() == nil {
			n.log.Warn("lease reclaim: round cut short; retrying", "err", err)
		}
	}
}

// reclaimExpired reclaims every open lease of every stored budget that
// expired more than ledger.LeaseReclaimGrace ago.
func (n *Node) reclaimExpired(ctx context.Context, client sarama.Client) error {
	now := time.Now().UnixMilli()
	expired, err := n.openLeases(ctx, func(l *ledger.Lease) bool {
		return l.Expires != 0 && now >= l.Expires+ledger.LeaseReclaimGrace.Milliseconds()
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range expired {
		if err := n.reclaim(ctx, client, l); err != nil {
			errs = append(errs, fmt.Errorf("lease %s/%d: %w", l.BudgetID, l.ID, err))
		}
	}
	return errors.Join(errs...)
}

// reclaim fences l on every partition, waits until they booked up to
// their fences, and closes l at what was booked under it.
func (n *Node) reclaim(ctx context.Context, client sarama.Client, l *ledger.Lease) error {
	ends, err := booking.HighWaterMarks(client)
	if err != nil {
		return err
	}
	at := time.Now().UnixMilli()
	fences := make(map[int32]int64, len(ends))
	for p, end := range ends {
		f, err := n.fence(ctx, p, ledger.Fence{BudgetID: l.BudgetID, LeaseID: l.ID, From: end, At: at})
		if err != nil {
			return fmt.Errorf("fence on partition %d: %w", p, err)
		}
		fences[p] = f.From
	}
	if err := n.awaitBookedTo(ctx, fences); err != nil {
		return err
	}
	booked, err := actors.BookedByLease(ctx, n.tikv, l.BudgetID)
	if err != nil {
		return err
	}
	u := booked[l.ID]
	if err := actors.NewBudgets(n.member.Cluster, n.tikv).CloseLease(l.BudgetID, l.ID, u.Amount, u.Count); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	n.reclaimed.Inc()
	n.log.Warn("lease reclaimed: its holder stopped renewing it; closed at what was booked under it",
		"budget", l.BudgetID, "lease", l.ID, "holder", l.Owner, "incarnation", l.Incarnation,
		"expired", time.UnixMilli(l.Expires).UTC().Format(time.RFC3339Nano), "amount", l.Amount, "booked", u.Amount, "returned", l.Amount-u.Amount)
	return nil
}

// settleOwnLeases closes, at what was booked under them, the leases this
// incarnation still holds open once its grant path and stream are closed:
// those its holders left because a grant under them may or may not have
// landed (grant: activeLease.uncertain). Nothing more can land now, so
// booking up to the topic's end settles them; a failure leaves them to
// the reclaim of the other nodes (or of this node's next start).
func (n *Node) settleOwnLeases(ctx context.Context) {
	mine, err := n.openLeases(ctx, func(l *ledger.Lease) bool { return l.Owner == n.ID && l.Incarnation == n.Incarnation })
	if err != nil {
		n.log.Warn("settling open leases: listing them; the reclaim will", "err", err)
		return
	}
	if len(mine) == 0 {
		return
	}
	client, err := sarama.NewClient(n.kafka.Brokers, storage.SaramaConfig("redrain-settle"))
	if err != nil {
		n.log.Warn("settling open leases: kafka client; the reclaim will", "err", err)
		return
	}
	defer client.Close()
	// Other nodes may be stopping too (a partition between owners): try
	// again for a while, within the stop's deadline.
	deadline := time.Now().Add(settleWithin)
	for _, l := range mine {
		for {
			err := n.reclaim(ctx, client, l)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				n.log.Warn("settling an open lease failed; the reclaim will", "budget", l.BudgetID, "lease", l.ID, "err", err)
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// settleWithin bounds how long a stopping node tries to settle its open
// leases.
const settleWithin = 20 * time.Second

// fence fences a lease on partition p: here when this node books p, else
// through the fenceActor of the node that does.
func (n *Node) fence(ctx context.Context, p int32, f ledger.Fence) (ledger.Fence, error) {
	ctx, cancel := context.WithTimeout(ctx, fenceTimeout)
	defer cancel()
	held, err := n.booker.Fence(ctx, p, f)
	if !errors.Is(err, booking.ErrNotOwned) {
		return held, err
	}
	owner, err := booking.PartOwner(ctx, n.tikv, p)
	if err != nil {
		return ledger.Fence{}, err
	}
	addr := ownerAddr(owner)
	if addr == "" || addr == n.member.System.Address() {
		return ledger.Fence{}, fmt.Errorf("no node books partition %d now (owner %q)", p, owner)
	}
	answer, err := n.ask(ctx, addr, fenceActor, appendFenceReq(nil, p, f))
	if err != nil {
		return ledger.Fence{}, err
	}
	return decodeFenceAnswer(answer, f)
}

// serveFence answers a fenceActor message.
func (n *Node) serveFence(body []byte) []byte {
	p, f, err := decodeFenceReq(body)
	if err != nil {
		return append([]byte{fenceFailed}, err.Error()...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fenceTimeout)
	defer cancel()
	held, err := n.booker.Fence(ctx, p, f)
	if err != nil {
		return append([]byte{fenceFailed}, err.Error()...)
	}
	return binary.AppendVarint([]byte{fenceHeld}, held.From)
}

// The fenceActor's wire: a request is the partition (uvarint), the budget
// id (uvarint length and bytes), the lease id (uvarint), From and At
// (varints); an answer is fenceHeld and the From that holds (varint), or
// fenceFailed and the error's text.
const (
	fenceHeld   byte = 1
	fenceFailed byte = 2
)

func appendFenceReq(dst []byte, p int32, f ledger.Fence) []byte {
	dst = binary.AppendUvarint(dst, uint64(p))
	dst = binary.AppendUvarint(dst, uint64(len(f.BudgetID)))
	dst = append(dst, f.BudgetID...)
	dst = binary.AppendUvarint(dst, f.LeaseID)
	dst = binary.AppendVarint(dst, f.From)
	return binary.AppendVarint(dst, f.At)
}

func decodeFenceReq(b []byte) (int32, ledger.Fence, error) {
	bad := errors.New("node: malformed fence request")
	p, k := binary.Uvarint(b)
	if k <= 0 || p > 1<<31-1 {
		return 0, ledger.Fence{}, bad
	}
	b = b[k:]
	l, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < l {
		return 0, ledger.Fence{}, bad
	}
	f := ledger.Fence{BudgetID: string(b[k : k+int(l)])}
	b = b[k+int(l):]
	if f.LeaseID, k = binary.Uvarint(b); k <= 0 || f.LeaseID == 0 {
		return 0, ledger.Fence{}, bad
	}
	b = b[k:]
	if f.From, k = binary.Varint(b); k <= 0 || f.From < 0 {
		return 0, ledger.Fence{}, bad
	}
	b = b[k:]
	if f.At, k = binary.Varint(b); k <= 0 || k != len(b) {
		return 0, ledger.Fence{}, bad
	}
	return int32(p), f, nil
}

func decodeFenceAnswer(b []byte, f ledger.Fence) (ledger.Fence, error) {
	if len(b) > 0 && b[0] == fenceFailed {
		return ledger.Fence{}, fmt.Errorf("the partition's owner: %s", b[1:])
	}
	if len(b) < 2 || b[0] != fenceHeld {
		return ledger.Fence{}, errors.New("node: malformed fence answer")
	}
	from, k := binary.Varint(b[1:])
	if k != len(b)-1 || from < 0 {
		return ledger.Fence{}, errors.New("node: malformed fence answer")
	}
	f.From = from
	return f, nil
}

// awaitBookedTo returns once the store holds every partition booked up to
// its offset in to, or fails after reclaimBookedWithin.
func (n *Node) awaitBookedTo(ctx context.Context, to map[int32]int64) error {
	deadline := time.Now().Add(reclaimBookedWithin)
	for {
		booked, err := booking.Booked(ctx, n.tikv, int32(len(to)))
		if err == nil {
			behind := -1
			for p, off := range to {
				if booked[p] < off {
					behind = int(p)
					break
				}
			}
			if behind < 0 {
				return nil
			}
			err = fmt.Errorf("partition %d booked to %d, its fence is at %d", behind, booked[int32(behind)], to[int32(behind)])
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not booked up to the fences within %v: %w", reclaimBookedWithin, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
