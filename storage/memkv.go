package storage

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemoryStore is a store of record in memory with the transaction rules of
// TiKV that redrain relies on: a transaction reads the store as of its
// start (and its own writes), and its commit fails with ErrConflict when a
// key it writes was committed by another transaction after it started
// (optimistic, first committer wins). The simulation runs every node of a
// cluster against one, each through its own handle (Client), whose faults
// decide what fails for that node.
type MemoryStore struct {
	mu   sync.Mutex
	ts   uint64
	keys map[string][]memVersion // versions by ascending commit timestamp
	// sorted holds every key ever written, in order (a deleted key keeps
	// its tombstone), for scans.
	sorted []string
}

// memVersion is a key's value as of a commit; nil value: deleted.
type memVersion struct {
	ts    uint64
	value []byte
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{keys: map[string][]memVersion{}} }

// KVOpKind is the kind of a store operation a handle's faults see.
type KVOpKind uint8

// Store operations.
const (
	KVBegin  KVOpKind = iota // a transaction starts
	KVRead                   // one read (Get, BatchGet, Scan) inside it
	KVCommit                 // it commits writes (never a transaction that wrote nothing)
)

// KVOp is one operation as a handle's faults see it.
type KVOp struct {
	Kind KVOpKind
	// Writes are a commit's keys, sorted.
	Writes []string
}

// KVOutcome is what a handle's faults make of an operation.
type KVOutcome uint8

// Outcomes of an operation.
const (
	KVOK       KVOutcome = iota // it runs as asked
	KVDown                      // it fails with ErrUnavailable; a commit writes nothing
	KVConflict                  // a commit fails with ErrConflict and writes nothing
	KVLost                      // a commit lands but its answer is lost: ErrUnavailable
)

// Client is a handle on the store whose operations faults may fail (nil:
// none fail). faults is called without any lock held and may block (a
// paused process).
func (m *MemoryStore) Client(faults func(KVOp) KVOutcome) *TiKV {
	if faults == nil {
		faults = func(KVOp) KVOutcome { return KVOK }
	}
	return &TiKV{kv: memBackend{m, faults}, close: func() error { return nil }}
}

// Dump returns every live key and value as of now, in key order.
func (m *MemoryStore) Dump() (keys []string, values [][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.sorted {
		if v := m.readLocked(k, m.ts); v != nil {
			keys, values = append(keys, k), append(values, v)
		}
	}
	return keys, values
}

// readLocked returns k's value as of ts (nil: none).
func (m *MemoryStore) readLocked(k string, ts uint64) []byte {
	vs := m.keys[k]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ts <= ts {
			return vs[i].value
		}
	}
	return nil
}

type memBackend struct {
	m      *MemoryStore
	faults func(KVOp) KVOutcome
}

func (b memBackend) begin(context.Context) (kvTxn, error) {
	if b.faults(KVOp{Kind: KVBegin}) != KVOK {
		return nil, fmt.Errorf("%w: begin: memory store down", ErrUnavailable)
	}
	b.m.mu.Lock()
	defer b.m.mu.Unlock()
	b.m.ts++
	return &memTxn{b: b, start: b.m.ts, writes: map[string][]byte{}}, nil
}

// memTxn buffers its writes (nil value: a delete) and reads as of start.
type memTxn struct {
	b      memBackend
	start  uint64
	writes map[string][]byte
}

var errMemDown = fmt.Errorf("%w: memory store down", ErrUnavailable)

func (t *memTxn) read() error {
	if t.b.faults(KVOp{Kind: KVRead}) != KVOK {
		return errMemDown
	}
	return nil
}

// valueLocked is k as this transaction sees it.
func (t *memTxn) valueLocked(k string) []byte {
	if v, ok := t.writes[k]; ok {
		return v
	}
	return t.b.m.readLocked(k, t.start)
}

func (t *memTxn) Get(_ context.Context, key []byte) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	t.b.m.mu.Lock()
	defer t.b.m.mu.Unlock()
	return bytes.Clone(t.valueLocked(string(key))), nil
}

func (t *memTxn) BatchGet(_ context.Context, keys [][]byte) (map[string][]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	t.b.m.mu.Lock()
	defer t.b.m.mu.Unlock()
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		if v := t.valueLocked(string(k)); v != nil {
			out[string(k)] = bytes.Clone(v)
		}
	}
	return out, nil
}

func (t *memTxn) Set(key, value []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("storage: empty key")
	}
	if value == nil {
		value = []byte{}
	}
	t.writes[string(key)] = bytes.Clone(value)
	return nil
}

func (t *memTxn) Delete(key []byte) error {
	t.writes[string(key)] = nil
	return nil
}

func (t *memTxn) StartTS() uint64 { return t.start }
func (t *memTxn) rollback()       {}

// Scan reads what the transaction sees in [start, end) (end nil: to the
// end of the keys), then calls fn on each without the store's lock held.
func (t *memTxn) Scan(start, end []byte, fn func(key, value []byte) (bool, error)) error {
	if err := t.read(); err != nil {
		return err
	}
	inRange := func(k string) bool {
		return k >= string(start) && (end == nil || k < string(end))
	}
	t.b.m.mu.Lock()
	keys := make([]string, 0)
	i, _ := slices.BinarySearch(t.b.m.sorted, string(start))
	for ; i < len(t.b.m.sorted) && inRange(t.b.m.sorted[i]); i++ {
		keys = append(keys, t.b.m.sorted[i])
	}
	for k := range t.writes {
		if inRange(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var ks, vs [][]byte
	for _, k := range keys {
		if v := t.valueLocked(k); v != nil {
			ks, vs = append(ks, []byte(k)), append(vs, bytes.Clone(v))
		}
	}
	t.b.m.mu.Unlock()
	for i := range ks {
		more, err := fn(ks[i], vs[i])
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// commit applies the writes as one new version unless a key they touch was
// committed after the transaction started.
func (t *memTxn) commit(context.Context) error {
	if len(t.writes) == 0 {
		return nil
	}
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	switch t.b.faults(KVOp{Kind: KVCommit, Writes: keys}) {
	case KVDown:
		return fmt.Errorf("%w: commit: memory store down", ErrUnavailable)
	case KVConflict:
		return fmt.Errorf("%w: injected", ErrConflict)
	case KVLost:
		if err := t.apply(keys); err != nil {
			return err
		}
		return fmt.Errorf("%w: commit: answer lost", ErrUnavailable)
	}
	return t.apply(keys)
}

func (t *memTxn) apply(keys []string) error {
	m := t.b.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if vs := m.keys[k]; len(vs) > 0 && vs[len(vs)-1].ts > t.start {
			return fmt.Errorf("%w: key %q written at %d after %d", ErrConflict, k, vs[len(vs)-1].ts, t.start)
		}
	}
	m.ts++
	for _, k := range keys {
		if _, ok := m.keys[k]; !ok {
			i, _ := slices.BinarySearch(m.sorted, k)
			m.sorted = slices.Insert(m.sorted, i, k)
		}
		m.keys[k] = append(m.keys[k], memVersion{ts: m.ts, value: t.writes[k]})
	}
	return nil
}
