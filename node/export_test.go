package node

import (
	"redrain/lines"
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
