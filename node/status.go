package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"redrain/actors"
	"redrain/dashboard"
	"redrain/grant"
)

// statusTTL is how long a node's status stays in Redis without a refresh:
// a node that stops publishing drops out of /admin/v1/cluster after it.
const statusTTL = 5 * time.Second

// nodeStatus is what each node publishes about itself every second.
type nodeStatus struct {
	ID string `json:"id"`
	// Incarnation is the process's start (unix ns): two processes that
	// publish one id with two incarnations are a duplicate node id.
	Incarnation uint64           `json:"incarnation"`
	HTTP        string           `json:"http"`
	Membership  string           `json:"membership"` // --cluster-addr
	MemberID    string           `json:"member_id"`  // protoactor's id of this member
	Ready       bool             `json:"ready"`
	Reason      string           `json:"reason,omitempty"` // why not ready
	Partitions  []int32          `json:"partitions"`       // grant topic partitions this node books
	Grains      map[string]int64 `json:"grains"`           // live grains here, by kind
	// Leases is what this node issued under each lease it holds open, by
	// budget (budget figures read it: a budget record learns a lease's
	// issued amount only when the lease closes).
	Leases map[string][]grant.OpenLease `json:"leases,omitempty"`
	// Counters are what the node counted since it started (the
	// dashboard's rates and percentiles).
	Counters *dashboard.Counters `json:"counters,omitempty"`
	Updated  time.Time           `json:"updated"`
}

func statusKey(id string) string { return "rr:node:" + id }

func (n *Node) status() nodeStatus {
	st := nodeStatus{ID: n.ID, Incarnation: n.Incarnation, HTTP: n.Addr(), Membership: n.member.Manage, MemberID: n.member.ID,
		Partitions: n.booker.Claims(), Updated: time.Now().UTC(),
		Grains: map[string]int64{actors.KindBudget: n.grains.Budget.Load()},
		Leases: n.grants.OpenLeases(), Counters: n.counters()}
	if st.Partitions == nil {
		st.Partitions = []int32{}
	}
	if err := n.readyErr(); err != nil {
		st.Reason = err.Error()
	} else {
		st.Ready = true
	}
	return st
}

// publishStatus writes this node's status to the shared Redis every second.
// A status of another incarnation found where it wrote its own is another
// live process with this node's id: the node then stops serving (not
// ready) and says why, since leases and booking's owner names assume one
// process per id.
func (n *Node) publishStatus(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// Once this node has written the key, finding another incarnation in
	// it means another process wrote it since: a live duplicate (before
	// that, the key may hold a crashed incarnation's last status).
	wrote := false
	for {
		if other, ok := n.otherIncarnation(ctx, time.Time{}); ok && wrote && n.duplicate.Load() == nil {
			err := fmt.Errorf("%w: another process (http %s, started %s) publishes node id %s too; each node needs a data dir of its own",
				ErrDuplicateNode, other.HTTP, time.Unix(0, int64(other.Incarnation)).UTC().Format(time.RFC3339), n.ID)
			n.duplicate.Store(&err)
			n.log.Error("duplicate node id: this node stops serving", "err", err)
		}
		b, _ := json.Marshal(n.status())
		if err := n.redis.Client.Set(ctx, statusKey(n.ID), b, statusTTL).Err(); err != nil && ctx.Err() == nil {
			n.log.Debug("status not published", "err", err)
		} else {
			wrote = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ErrDuplicateNode is the error of a node whose id another live process
// uses (a copied data dir).
var ErrDuplicateNode = errors.New("node: duplicate node id")

// otherIncarnation returns the status another incarnation of this node id
// published after since (zero: ever, within statusTTL).
func (n *Node) otherIncarnation(ctx context.Context, since time.Time) (nodeStatus, bool) {
	raw, err := n.redis.Client.Get(ctx, statusKey(n.ID)).Bytes()
	if err != nil {
		return nodeStatus{}, false
	}
	var st nodeStatus
	if json.Unmarshal(raw, &st) != nil || st.Incarnation == n.Incarnation || st.Incarnation == 0 || !st.Updated.After(since) {
		return nodeStatus{}, false
	}
	return st, true
}

// checkDuplicate refuses to start while another live process publishes
// this node's id. A status of an earlier incarnation is one that crashed
// a moment ago unless it is written again: the check waits out one
// publishing period to tell.
func (n *Node) checkDuplicate(ctx context.Context) error {
	first, ok := n.otherIncarnation(ctx, time.Time{})
	if !ok {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
	}
	if other, ok := n.otherIncarnation(ctx, first.Updated); ok {
		return fmt.Errorf("%w: a live process (http %s, started %s) is node %s; each node needs a data dir of its own",
			ErrDuplicateNode, other.HTTP, time.Unix(0, int64(other.Incarnation)).UTC().Format(time.RFC3339), n.ID)
	}
	return nil
}

// clusterView is GET /admin/v1/cluster.
type clusterView struct {
	Members    []clusterMember  `json:"members"`    // protoactor's membership as this node sees it
	Nodes      []nodeStatus     `json:"nodes"`      // what live nodes published (last statusTTL)
	Partitions []partitionState `json:"partitions"` // every partition, its booking node and lag
}

type clusterMember struct {
	ID      string   `json:"id"`
	Address string   `json:"address"`
	Kinds   []string `json:"kinds"`
	Self    bool     `json:"self"`
}

type partitionState struct {
	Partition int32  `json:"partition"`
	Node      string `json:"node"` // "" while unassigned (a rebalance)
	Lag       int64  `json:"lag"`  // grant records not yet booked
}

// statuses reads what every live node published.
func (n *Node) statuses(ctx context.Context) ([]nodeStatus, error) {
	keys, err := n.redis.Client.Keys(ctx, statusKey("*")).Result()
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	vals, err := n.redis.Client.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	var out []nodeStatus
	for _, raw := range vals {
		s, ok := raw.(string)
		if !ok {
			continue // expired between KEYS and MGET
		}
		var st nodeStatus
		if json.Unmarshal([]byte(s), &st) != nil {
			continue
		}
		out = append(out, st)
	}
	return out, nil
}

// openIssued is what every node reports issued under its open leases, by
// budget and lease: this node's figures fresh, the others' as of their
// last status (at most a second old).
func (n *Node) openIssued() map[string]map[uint64]actors.LeaseIssued {
	out := map[string]map[uint64]actors.LeaseIssued{}
	add := func(leases map[string][]grant.OpenLease) {
		for budget, ls := range leases {
			if out[budget] == nil {
				out[budget] = map[uint64]actors.LeaseIssued{}
			}
			for _, l := range ls {
				out[budget][l.Lease] = actors.LeaseIssued{Amount: l.Issued, Count: l.Count}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	nodes, err := n.statuses(ctx)
	if err != nil {
		n.log.Debug("budget view: node statuses unreadable", "err", err)
	}
	for _, st := range nodes {
		if st.ID != n.ID {
			add(st.Leases)
		}
	}
	add(n.grants.OpenLeases())
	return out
}

func (n *Node) clusterView(ctx context.Context) ([]byte, error) {
	v := clusterView{Members: []clusterMember{}, Nodes: []nodeStatus{}, Partitions: []partitionState{}}
	if n.member != nil { // a read node is no member
		for _, m := range n.member.Members() {
			v.Members = append(v.Members, clusterMember{ID: m.Id, Address: m.Address(), Kinds: m.Kinds, Self: m.Id == n.member.ID})
		}
	}
	sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].Address < v.Members[j].Address })
	nodes, err := n.statuses(ctx)
	if err != nil {
		return nil, err
	}
	owner := map[int32]string{}
	for _, st := range nodes {
		st.Leases, st.Counters = nil, nil // budget figures and the dashboard show them
		v.Nodes = append(v.Nodes, st)
		for _, p := range st.Partitions {
			owner[p] = st.ID
		}
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	lag := n.partitionLag.Load()
	if lag != nil {
		for p, l := range *lag {
			v.Partitions = append(v.Partitions, partitionState{Partition: p, Node: owner[p], Lag: l})
		}
	}
	sort.Slice(v.Partitions, func(i, j int) bool { return v.Partitions[i].Partition < v.Partitions[j].Partition })
	return json.Marshal(v)
}
