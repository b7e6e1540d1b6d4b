package booking

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"redrain/ledger"
)

// Wire format of a read through a partition's owner, version 1 (an owner
// answers another version readRefused, and the reader reads the store):
//
//	request: 1, partition uvarint, epoch uvarint, seq uvarint (the epoch
//	  and next journal seq of the partition's state as the reader read it
//	  from the store), count uvarint, then each act_id uvarint
//	answer:  1, status byte; with readServed: count uvarint, then each
//	  account as uvarint length and ledger.MarshalAccount's encoding
//
// The owner answers readServed only when its committed accounts are at
// least as new as the state the reader read (see part.read), so a read
// through the owner never returns an account older than the store's.
const readVersion = 1

// Statuses of a read's answer.
const (
	readServed   = 1 // the accounts follow
	readNotOwner = 2 // the node does not own the partition (any more)
	readBehind   = 3 // it owns it, but has not caught up with the reader's state yet
	readRefused  = 4 // the request did not decode
)

// readIDsMax bounds the act_ids of one read request (a larger read of one
// partition goes to the store), and so the accounts of its answer.
const readIDsMax = 4096

// readAccountBytesMax bounds one encoded account of an answer: an account
// keeps at most 64 recent entries before it archives.
const readAccountBytesMax = 1 << 20

var errReadWire = errors.New("booking: malformed owner read")

// readRequest asks a partition's owner for committed accounts.
type readRequest struct {
	part       int32
	epoch, seq uint64 // the partition's state as the reader read it
	ids        []uint64
}

func appendReadRequest(dst []byte, r *readRequest) []byte {
	dst = append(dst, readVersion)
	dst = binary.AppendUvarint(dst, uint64(r.part))
	dst = binary.AppendUvarint(dst, r.epoch)
	dst = binary.AppendUvarint(dst, r.seq)
	dst = binary.AppendUvarint(dst, uint64(len(r.ids)))
	for _, id := range r.ids {
		dst = binary.AppendUvarint(dst, id)
	}
	return dst
}

// wireReader reads uvarints off a message; the first failure sticks.
type wireReader struct {
	b   []byte
	err error
}

func (w *wireReader) uvarint(what string) uint64 {
	if w.err != nil {
		return 0
	}
	v, n := binary.Uvarint(w.b)
	if n <= 0 || n > 1 && w.b[n-1] == 0 { // short, overflowing or not minimal

		w.err = fmt.Errorf("%w: %s", errReadWire, what)
		return 0
	}
	w.b = w.b[n:]
	return v
}

func (w *wireReader) byte1(what string) byte {
	if w.err != nil {
		return 0
	}
	if len(w.b) == 0 {
		w.err = fmt.Errorf("%w: %s", errReadWire, what)
		return 0
	}
	c := w.b[0]
	w.b = w.b[1:]
	return c
}

// count reads a count of items that take at least one byte each, at most
// limit.
func (w *wireReader) count(what string, limit int) int {
	n := w.uvarint(what)
	if w.err == nil && (n > uint64(limit) || n > uint64(len(w.b))) {
		w.err = fmt.Errorf("%w: %d %s", errReadWire, n, what)
		return 0
	}
	return int(n)
}

func (w *wireReader) end() error {
	if w.err == nil && len(w.b) != 0 {
		w.err = fmt.Errorf("%w: %d trailing bytes", errReadWire, len(w.b))
	}
	return w.err
}

func decodeReadRequest(src []byte) (*readRequest, error) {
	w := wireReader{b: src}
	if v := w.byte1("version"); w.err == nil && v != readVersion {
		return nil, fmt.Errorf("%w: version %d", errReadWire, v)
	}
	p := w.uvarint("partition")
	if w.err == nil && p > 1<<31-1 {
		return nil, fmt.Errorf("%w: partition %d", errReadWire, p)
	}
	r := &readRequest{part: int32(p), epoch: w.uvarint("epoch"), seq: w.uvarint("seq")}
	n := w.count("act_ids", readIDsMax)
	if w.err == nil {
		r.ids = make([]uint64, n)
	}
	for i := 0; i < n && w.err == nil; i++ {
		r.ids[i] = w.uvarint("act_id")
	}
	if err := w.end(); err != nil {
		return nil, err
	}
	return r, nil
}

// appendReadAnswer appends an answer: accounts (in act_id order) when
// status is readServed.
func appendReadAnswer(dst []byte, status byte, accounts map[uint64]*ledger.Account) []byte {
	dst = append(dst, readVersion, status)
	if status != readServed {
		return dst
	}
	dst = binary.AppendUvarint(dst, uint64(len(accounts)))
	var enc []byte
	for _, id := range slices.Sorted(maps.Keys(accounts)) {
		enc = ledger.MarshalAccount(enc[:0], accounts[id])
		dst = binary.AppendUvarint(dst, uint64(len(enc)))
		dst = append(dst, enc...)
	}
	return dst
}

// decodeReadAnswer decodes an answer; accounts is nil unless status is
// readServed. Every account must be one of ids, at most once.
func decodeReadAnswer(src []byte, ids []uint64) (status byte, accounts map[uint64]*ledger.Account, err error) {
	w := wireReader{b: src}
	if v := w.byte1("version"); w.err == nil && v != readVersion {
		return 0, nil, fmt.Errorf("%w: answer version %d", errReadWire, v)
	}
	status = w.byte1("status")
	switch {
	case w.err != nil:
		return 0, nil, w.err
	case status == readNotOwner || status == readBehind || status == readRefused:
		return status, nil, w.end()
	case status != readServed:
		return 0, nil, fmt.Errorf("%w: status %d", errReadWire, status)
	}
	asked := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		asked[id] = true
	}
	n := w.count("accounts", len(ids))
	accounts = make(map[uint64]*ledger.Account, n)
	for i := 0; i < n && w.err == nil; i++ {
		size := w.count("account bytes", readAccountBytesMax)
		if w.err != nil {
			break
		}
		a, err := ledger.UnmarshalAccount(w.b[:size])
		if err != nil {
			return 0, nil, fmt.Errorf("%w: account: %w", errReadWire, err)
		}
		if !asked[a.ActID] || accounts[a.ActID] != nil {
			return 0, nil, fmt.Errorf("%w: account %d was not asked for, or came twice", errReadWire, a.ActID)
		}
		accounts[a.ActID] = a
		w.b = w.b[size:]
	}
	if err := w.end(); err != nil {
		return 0, nil, err
	}
	return status, accounts, nil
}
