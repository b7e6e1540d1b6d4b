package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/tikv/client-go/v2/txnkv/transaction"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/booking"
	"redrain/grant"
	"redrain/ledger"
)

// forwardActor is the name of every node's actor that decides batches of
// grants other nodes forward to it, the owner of their shard.
const forwardActor = "redrain-grants"

// ownerName is what booking records as a partition's owner: the node, its
// incarnation, and where its forwarding actor listens (the member's
// remoting address), so that any node can forward there.
func ownerName(id string, incarnation uint64, addr string) string {
	return fmt.Sprintf("%s/%d@%s", id, incarnation, addr)
}

// ownerAddr returns the remoting address in an owner name ("" for none,
// or a name written before owners carried one).
func ownerAddr(owner string) string {
	_, addr, ok := strings.Cut(owner, "@")
	if !ok {
		return ""
	}
	return addr
}

// spawnForwarding starts this node's forwarding actor. Each batch is
// decided on its own goroutine (it waits for its record's acknowledgement),
// so the actor takes the next one at once; the answer goes straight to the
// sender's future.
func (n *Node) spawnForwarding() error {
	root := n.member.System.Root
	props := actor.PropsFromFunc(func(c actor.Context) {
		bv, ok := c.Message().(*wrapperspb.BytesValue)
		if !ok {
			return
		}
		sender := c.Sender()
		if sender == nil {
			return
		}
		body := bv.Value
		go func() { root.Send(sender, &wrapperspb.BytesValue{Value: n.grants.Serve(body)}) }()
	})
	_, err := root.SpawnNamed(props, forwardActor)
	if err != nil {
		return fmt.Errorf("node: forwarding actor: %w", err)
	}
	return nil
}

// peers reaches the owners of shards over the actor cluster's remoting.
type peers struct{ n *Node }

// Owner reads the partition's owner from the store.
func (p peers) Owner(ctx context.Context, part int32) (string, error) {
	owner, err := booking.PartOwner(ctx, p.n.tikv, part)
	if err != nil {
		return "", err
	}
	return ownerAddr(owner), nil
}

// Forward sends one batch to the forwarding actor at addr and waits for
// its answer until ctx's deadline.
func (p peers) Forward(ctx context.Context, addr string, body []byte) ([]byte, error) {
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	res, err := p.n.member.System.Root.RequestFuture(actor.NewPID(addr, forwardActor), &wrapperspb.BytesValue{Value: body}, timeout).Result()
	if err != nil {
		return nil, err
	}
	bv, ok := res.(*wrapperspb.BytesValue)
	if !ok {
		return nil, fmt.Errorf("node: forwarded batch answered with %T", res)
	}
	if len(bv.Value) == 0 {
		return nil, errors.New("node: the owner could not read the forwarded batch")
	}
	return bv.Value, nil
}

// sessions hands the partitions booking gains and loses to the grant
// path: the shard of a partition this node books is decided here.
type sessions struct{ n *Node }

func (s sessions) Owned(t *booking.Tenure) {
	p := t.Partition
	s.n.grants.Own(p, t, func(ctx context.Context) ([]grant.Booked, error) { return s.n.bookedIn(ctx, p) })
}

func (s sessions) Lost(t *booking.Tenure) { s.n.grants.Disown(t.Partition) }

// bookedIn reads every packet the store holds for partition p's users.
func (n *Node) bookedIn(ctx context.Context, p int32) ([]grant.Booked, error) {
	var out []grant.Booked
	err := n.tikv.View(func(txn *transaction.KVTxn) error {
		out = out[:0]
		_, err := booking.ScanPartition(ctx, txn, p, func(a *ledger.Account) (bool, error) {
			entries, err := booking.AllEntries(ctx, n.tikv, a)
			if err != nil {
				return false, err
			}
			for _, e := range entries {
				out = append(out, grant.Booked{ActID: a.ActID, LimitKey: e.LimitKey, AwardType: e.AwardType, Amount: e.Amount})
			}
			return true, nil
		})
		return err
	})
	return out, err
}
