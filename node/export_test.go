package node

import (
	"context"
	"time"

	"redrain/booking"
	"redrain/consistency"
	"redrain/grant"
	"redrain/lines"
	"redrain/statement"
	"redrain/storage"
)

// Brokers are the node's Kafka brokers, for tests that write the grant
// topic themselves.
func (n *Node) Brokers() []string { return n.kafka.Brokers }

// Store is the node's store of record, for tests that write it while the
// node runs.
func (n *Node) Store() *storage.TiKV { return n.tikv }

// Partitions is how many partitions the node's grant topic has.
func (n *Node) Partitions() int32 { return n.cfg.Partitions }

// Lines is the node's business lines' syncer (nil without lines).
func (n *Node) Lines() *lines.Syncer { return n.lines }

// Grants is the node's grant path, for tests that ask it what the HTTP
// API does not (a user's outstanding packets).
func (n *Node) Grants() *grant.Admission { return n.grants }

// Booker is the node's booking, for tests that book as a withdrawal does.
func (n *Node) Booker() *booking.Booker { return n.booker }

// ConsistencyToday runs the node's consistency check over today's
// journals (listing, never repairing).
func (n *Node) ConsistencyToday(ctx context.Context) (*consistency.Report, error) {
	return n.consistency.Checker().Day(ctx, statement.DayOf(time.Now().UnixMilli()), false)
}

// ConsistencyRepairToday runs it and repairs what it finds.
func (n *Node) ConsistencyRepairToday(ctx context.Context) (*consistency.Report, error) {
	return n.consistency.Checker().Day(ctx, statement.DayOf(time.Now().UnixMilli()), true)
}
