package node

import (
	"context"
	"strconv"
	"time"

	"redrain/consistency"
)

// The consistency service (issue 13, item 5): each write node checks the
// partitions it books continuously and takes part in the T+1 check (one
// node a day, by a lease in the store); /admin/v1/audit shows what they
// found (its "consistency" section).

// consistencyEvery is the continuous check's period.
const consistencyEvery = 10 * time.Second

// startConsistency builds the node's consistency service over its booker
// and the grant topic; nil when the topic cannot be read (logged: the
// store's checks still run in reconcile).
func (n *Node) startConsistency(ctx context.Context) {
	stream, err := consistency.NewKafkaStream(n.kafka.Brokers, n.cfg.GrantTopic)
	if err != nil {
		n.log.Error("consistency: checks off: the grant topic cannot be read", "err", err)
		return
	}
	c, err := consistency.New(consistency.Config{DB: n.tikv, Parts: n.cfg.Partitions, Stream: stream,
		Statements: n.statementConfig(), Booker: n.booker})
	if err != nil {
		_ = stream.Close()
		n.log.Error("consistency: checks off", "err", err)
		return
	}
	n.consistencyStream = stream
	n.consistency = consistency.NewService(consistency.ServiceConfig{Checker: c, Owned: n.booker.Claims, Every: consistencyEvery,
		Daily: true, Owner: n.ID + "/" + strconv.FormatUint(n.Incarnation, 10), Metrics: n.Metrics, Log: n.log})
	n.spawn(ctx, "consistency", n.consistency.Run)
}
