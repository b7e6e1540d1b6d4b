package node

import (
	"context"
	"time"
)

// Stop shuts the node down in order: /readyz answers 503 while the node
// still serves for Config.StopGrace (load balancers stop sending); then no
// new requests, the busy connections answered, leases returned, grants
// flushed to Kafka, leases left open with uncertain grants closed at what
// was booked under them, booking stopped (its partitions released once
// their commits in flight answered), the cluster left, backends closed.
// An idle node stops in well under a second plus the grace (BENCHMARKS.md,
// "Stop"); ctx bounds the wait for busy connections and the lease
// settling.
func (n *Node) Stop(ctx context.Context) {
	n.stopped.Do(func() { n.stop(ctx) })
}

func (n *Node) stop(ctx context.Context) {
	start := time.Now()
	var phases []any // name, duration pairs for the log
	phase := func(name string, since time.Time) time.Time {
		now := time.Now()
		phases = append(phases, name, now.Sub(since).Round(time.Millisecond))
		return now
	}
	at := start
	n.draining.Store(true)
	if n.server != nil && n.cfg.StopGrace > 0 && n.readyErr() == nil {
		// Nothing routes to a node that was not ready: no grace then.
		n.log.Info("stopping: not ready from now on; serving for the grace", "grace", n.cfg.StopGrace)
		t := time.NewTimer(n.cfg.StopGrace)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		at = phase("grace", at)
	}
	if n.server != nil {
		_ = n.server.Shutdown(ctx)
	}
	if n.opsServer != nil {
		_ = n.opsServer.Shutdown(ctx)
	} else if n.opsListener != nil {
		_ = n.opsListener.Close()
	}
	at = phase("http", at)
	if n.grants != nil {
		n.grants.Close(ctx)
	}
	if n.stream != nil {
		_ = n.stream.Close()
	}
	at = phase("grants", at)
	if n.grants != nil && n.stream != nil {
		if n.reclaimer != nil { // while booking still runs
			n.reclaimer.Settle(ctx, n.ID, n.Incarnation)
		}
	}
	at = phase("settle", at)
	if n.cancel != nil {
		n.cancel()
	}
	n.bg.Wait()
	n.lagMu.Lock()
	if n.lagClient != nil {
		_ = n.lagClient.Close()
	}
	n.lagMu.Unlock()
	if n.lines != nil { // its consumer stopped with the background
		n.lines.Close()
	}
	if n.consistencyStream != nil { // its checks stopped with the background
		_ = n.consistencyStream.Close()
	}
	at = phase("booking", at)
	if n.member != nil {
		n.member.Stop()
	}
	at = phase("cluster", at)
	if n.pipe != nil {
		n.pipe.Close()
	}
	if n.redis != nil {
		n.redis.Close()
	}
	if n.kafka != nil {
		n.kafka.Close()
	}
	if n.tikv != nil {
		_ = n.tikv.Close()
	}
	phase("backends", at)
	if n.server != nil { // Start got as far as serving
		n.log.Info("node stopped", append([]any{"took", time.Since(start).Round(time.Millisecond)}, phases...)...)
	}
}
