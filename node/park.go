package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/valyala/fasthttp"

	"redrain/adminauth"
	"redrain/booking"
	"redrain/errcode"
	"redrain/storage"
)

// parkFetchTimeout bounds the read of the record to park from the topic.
const parkFetchTimeout = 10 * time.Second

// serveParked serves the parked grant records (adminauth.PathParked): GET
// lists them; POST {"partition","offset","reason"} reads the record at
// that offset from the topic and parks it (booking.Park), so that a
// partition stuck at it goes on. It reports false for any other path.
func (n *Node) serveParked(ctx *fasthttp.RequestCtx, keyID string) bool {
	if string(ctx.Path()) != adminauth.PathParked {
		return false
	}
	c, cancel := context.WithTimeout(context.Background(), parkFetchTimeout+5*time.Second)
	defer cancel()
	switch {
	case ctx.IsGet():
		list, err := booking.ParkedRecords(c, n.tikv)
		if err != nil {
			errcode.Write(ctx, errcode.Errorf(errcode.CodeUnavailable, "parked records: %v", err))
			return true
		}
		writeAdminJSON(ctx, map[string]any{"parked": list})
	case ctx.IsPost():
		var req struct {
			Partition *int32 `json:"partition"`
			Offset    *int64 `json:"offset"`
			Reason    string `json:"reason"`
		}
		dec := json.NewDecoder(bytes.NewReader(ctx.PostBody()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || dec.More() || req.Partition == nil || req.Offset == nil || req.Reason == "" ||
			*req.Partition < 0 || *req.Partition >= n.stream.Partitions() || *req.Offset < 0 {
			errcode.Write(ctx, errcode.Errorf(errcode.CodeMalformed, `want {"partition": 0..%d, "offset": N >= 0, "reason": "why"}`, n.stream.Partitions()-1))
			return true
		}
		value, err := n.readRecord(c, *req.Partition, *req.Offset)
		if err != nil {
			errcode.Write(ctx, err)
			return true
		}
		p := booking.Parked{Partition: *req.Partition, Offset: *req.Offset, By: keyID, At: time.Now().UnixMilli(), Reason: req.Reason, Value: value}
		created, err := booking.Park(c, n.tikv, p)
		switch {
		case errors.Is(err, booking.ErrNotPoisoned):
			errcode.Write(ctx, errcode.Errorf(errcode.CodeRecordReadable, "partition %d offset %d: %v", p.Partition, p.Offset, err))
			return true
		case err != nil:
			errcode.Write(ctx, errcode.Errorf(errcode.CodeUnavailable, "park: %v", err))
			return true
		}
		n.log.Warn("booking: a grant record was parked", "partition", p.Partition, "offset", p.Offset, "by", keyID, "reason", p.Reason, "new", created)
		writeAdminJSON(ctx, map[string]any{"parked": p, "created": created})
	default:
		ctx.Response.Header.Set("Allow", "GET, POST")
		errcode.Write(ctx, errcode.Errorf(errcode.CodeMethodNotAllowed, "%s %s: GET or POST", ctx.Method(), adminauth.PathParked))
	}
	return true
}

// readRecord reads the grant topic's record at offset of part.
func (n *Node) readRecord(ctx context.Context, part int32, offset int64) ([]byte, error) {
	consumer, err := sarama.NewConsumer(n.kafka.Brokers, storage.SaramaConfig("redrain-park"))
	if err != nil {
		return nil, errcode.Errorf(errcode.CodeUnavailable, "kafka: %v", err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(n.cfg.GrantTopic, part, offset)
	if errors.Is(err, sarama.ErrOffsetOutOfRange) {
		return nil, errcode.Errorf(errcode.CodeNotFound, "partition %d has no record at offset %d", part, offset)
	}
	if err != nil {
		return nil, errcode.Errorf(errcode.CodeUnavailable, "kafka: %v", err)
	}
	defer pc.Close()
	t := time.NewTimer(parkFetchTimeout)
	defer t.Stop()
	select {
	case m := <-pc.Messages():
		if m.Offset != offset {
			return nil, errcode.Errorf(errcode.CodeNotFound, "partition %d has no record at offset %d (next is %d)", part, offset, m.Offset)
		}
		return m.Value, nil
	case <-t.C:
		return nil, errcode.Errorf(errcode.CodeNotFound, "partition %d: no record at offset %d within %v", part, offset, parkFetchTimeout)
	case <-ctx.Done():
		return nil, errcode.Errorf(errcode.CodeUnavailable, "kafka: %v", ctx.Err())
	}
}

// writeAdminJSON answers 200 with v as JSON.
func writeAdminJSON(ctx *fasthttp.RequestCtx, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		errcode.Write(ctx, fmt.Errorf("encode: %w", err))
		return
	}
	errcode.WriteJSON(ctx, fasthttp.StatusOK, raw)
}
