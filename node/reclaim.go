package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/IBM/sarama"

	"redrain/actors"
	"redrain/booking"
	"redrain/ledger"
	"redrain/reclaim"
	"redrain/storage"
)

// Leases of a node that renews them no more are reclaimed by any node
// (package reclaim); a partition's fence is drawn where it is booked:
// here, or through the fenceActor of the node that books it.

// fenceActor fences leases on the partitions a node books.
const fenceActor = "redrain-fences"

// newReclaimer is this node's reclaimer: the topic's ends through the
// node's Kafka client for the lag, fences here or at the partition's
// owner.
func (n *Node) newReclaimer() *reclaim.Reclaimer {
	return &reclaim.Reclaimer{Log: n.log, TiKV: n.tikv, Budgets: actors.NewBudgets(n.member.Cluster, n.tikv),
		Parts: n.cfg.Partitions, Ends: n.topicEnds, Fence: n.fence, Reclaimed: n.reclaimed}
}

// topicEnds reads the grant topic's end offsets.
func (n *Node) topicEnds(context.Context) (map[int32]int64, error) {
	n.lagMu.Lock()
	defer n.lagMu.Unlock()
	if n.lagClient == nil {
		c, err := sarama.NewClient(n.kafka.Brokers, storage.SaramaConfig("redrain-lag"))
		if err != nil {
			return nil, fmt.Errorf("%w: kafka client: %v", storage.ErrUnavailable, err)
		}
		n.lagClient = c
	}
	return booking.HighWaterMarks(n.lagClient, n.cfg.GrantTopic)
}

// fence fences a lease on partition p: here when this node books p, else
// through the fenceActor of the node that does.
func (n *Node) fence(ctx context.Context, p int32, f ledger.Fence) (ledger.Fence, error) {
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
	ctx, cancel := context.WithTimeout(context.Background(), reclaim.FenceTimeout)
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
