package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/booking"
	"redrain/grant"
	"redrain/ledger"
)

// Names of every node's actors that serve other nodes: forwardActor
// decides batches of grants forwarded to it, the owner of their shard;
// readActor answers reads of accounts of partitions it owns.
const (
	forwardActor = "redrain-grants"
	readActor    = "redrain-reads"
)

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

// ownerReadServeMax bounds how long the owner spends on one read: its
// reader gives up at about the same time and reads the store.
const ownerReadServeMax = 2 * time.Second

// spawnServing starts this node's actors that serve other nodes: grant
// batches (grant.Serve), lease fences (reclaim.go) and account reads
// (booking.ServeRead).
func (n *Node) spawnServing() error {
	if err := n.spawnServer(forwardActor, n.grants.Serve); err != nil {
		return err
	}
	if err := n.spawnServer(fenceActor, n.serveFence); err != nil { // reclaim.go
		return err
	}
	return n.spawnServer(readActor, func(body []byte) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), ownerReadServeMax)
		defer cancel()
		return n.booker.ServeRead(ctx, body)
	})
}

// spawnServer starts the actor name that answers each message's bytes
// with serve's. Each message is decided on its own goroutine (a batch
// waits for its record's acknowledgement, a read for the partition's
// goroutine), so the actor takes the next one at once; the answer goes
// straight to the sender's future.
func (n *Node) spawnServer(name string, serve func([]byte) []byte) error {
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
		go func() { root.Send(sender, &wrapperspb.BytesValue{Value: serve(body)}) }()
	})
	if _, err := root.SpawnNamed(props, name); err != nil {
		return fmt.Errorf("node: actor %s: %w", name, err)
	}
	return nil
}

// ask sends body to the actor name at addr and waits for its answer until
// ctx's deadline (a second without one).
func (n *Node) ask(ctx context.Context, addr, name string, body []byte) ([]byte, error) {
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	res, err := n.member.System.Root.RequestFuture(actor.NewPID(addr, name), &wrapperspb.BytesValue{Value: body}, timeout).Result()
	if err != nil {
		return nil, err
	}
	bv, ok := res.(*wrapperspb.BytesValue)
	if !ok {
		return nil, fmt.Errorf("node: %s answered with %T", name, res)
	}
	if len(bv.Value) == 0 {
		return nil, fmt.Errorf("node: %s at %s could not read the message", name, addr)
	}
	return bv.Value, nil
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
	return p.n.ask(ctx, addr, forwardActor, body)
}

// owners carries booking's reads of partitions owned elsewhere to their
// owners' forwarding actors (booking.Owners).
type owners struct{ n *Node }

// errNoOwnerAddr: booking names as a partition's owner this member or no
// reachable address; the read goes to the store.
var errNoOwnerAddr = errors.New("node: the partition's owner has no other address to read from")

func (o owners) Read(ctx context.Context, owner string, req []byte) ([]byte, error) {
	addr := ownerAddr(owner)
	if addr == "" || addr == o.n.member.System.Address() {
		return nil, errNoOwnerAddr
	}
	return o.n.ask(ctx, addr, readActor, req)
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
	err := booking.PacketsIn(ctx, n.tikv, p, func(actID uint64, e ledger.Entry) {
		out = append(out, grant.BookedEntry(actID, e.LimitKey, e.AwardType, e.Amount))
	})
	return out, err
}
