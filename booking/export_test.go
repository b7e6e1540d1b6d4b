package booking

import (
	"context"

	"github.com/IBM/sarama"

	"redrain/ledger"
)

// Hooks for the external tests, which drive partitions without a consumer
// group.

// Own takes partition id over and books what msgs delivers, as the
// consumer group's claim of it would, until ctx ends.
func (b *Booker) Own(ctx context.Context, id int32, msgs <-chan *sarama.ConsumerMessage) {
	b.own(ctx, nil, id, msgs)
}

// CommitLoop runs the committers that Run starts, until ctx ends.
func (b *Booker) CommitLoop(ctx context.Context) {
	for _, ch := range b.commits[1:] {
		go b.commitLoop(ctx, ch)
	}
	b.commitLoop(ctx, b.commits[0])
}

// Sync returns once the goroutine of the owned partition id has handled
// everything sent to it before (false: not owned here).
func (b *Booker) Sync(ctx context.Context, id int32) bool {
	o := b.ownedPart(id)
	return o != nil && o.p.readFrom(ctx, o.gone, &readReq{}, map[uint64]*ledger.Account{}) == readServed
}

// Settled reports whether this node owns partition id, and then whether
// its goroutine has settled every commit up to the store's state s (its
// reads show what the store holds).
func (b *Booker) Settled(ctx context.Context, id int32, s *ledger.PartState) (owned, settled bool) {
	o := b.ownedPart(id)
	if o == nil {
		return false, false
	}
	return true, o.p.readFrom(ctx, o.gone, &readReq{at: s}, map[uint64]*ledger.Account{}) == readServed
}

// CkptJournals is how many journals an owner writes between checkpoints.
const CkptJournals = ckptJournals

// TopicOffsets is topicOffsets, for tests.
var TopicOffsets = topicOffsets
