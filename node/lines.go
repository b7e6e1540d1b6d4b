package node

import (
	"fmt"

	"redrain/lines"
)

// startLines builds the business lines' syncer when the campaign file
// configures any (package lines): the sync topic, created like the grant
// topic with as many partitions, its producer behind POST /v1/sync/notify
// and the pull workers. Its consumer group runs in the node's background
// (runLines) and it stops after them (stop.go). Without lines the node
// has none, and the route answers every notice 404 unknown_line.
func (n *Node) startLines() error {
	ls := n.Campaign.Config.BusinessLines
	if len(ls) == 0 {
		return nil
	}
	if err := n.kafka.EnsureTopic(n.cfg.SyncTopic, n.cfg.Partitions); err != nil {
		return fmt.Errorf("node: business lines: %w", err)
	}
	s, err := lines.New(lines.Config{Lines: ls, Brokers: n.kafka.Brokers, Topic: n.cfg.SyncTopic, Group: n.cfg.SyncGroup,
		TiKV: n.tikv, Metrics: n.Metrics, Log: n.log})
	if err != nil {
		return fmt.Errorf("node: business lines: %w", err)
	}
	n.lines = s
	n.log.Info("business lines", "lines", s.Lines(), "topic", n.cfg.SyncTopic, "group", n.cfg.SyncGroup)
	return nil
}
