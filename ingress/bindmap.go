package ingress

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
)

// bindMap maps (app, user id) to an act_id, like a map[bindKey]uint64,
// but holds no pointer per binding: each binding is a record in one byte
// slice (text: its act_id, app and user id back to back), and a table
// from the identity's hash (headTable) holds the record's offset, so the
// collector neither marks a string per bound user nor scans the table
// (an owner's holds every user of the node), and a lookup touches the
// table's slot and the record, which answers the act_id and proves the
// identity in one place. The text grows by chunks of at most bindChunk
// bytes, so a new record never copies the ones before it beyond its own
// chunk: one slice that doubled moved every record again at each
// doubling, under the shard's lock, and faulted fresh memory in, 2.3% of
// a node's CPU at 200k new users a second (BENCHMARKS.md, *The binder's
// records in chunks*). Identities sharing a hash chain their further
// entries in a slice. Not safe for concurrent use (a bindShard's lock
// guards it). The zero value is empty.
type bindMap struct {
	heads headTable   // identity hash -> its first entry
	more  []bindEntry // further entries of a hash, chained by next
	text  [][]byte    // the records in chunks, back to back after one unused byte
	n     int         // bindings held
	dead  int         // bytes of text no binding uses
	// hash is the identities' hash (nil: maphash with seed); tests set a
	// poor one to make chains.
	hash   func(app uint32, user string) uint64
	seed   maphash.Seed
	seeded bool
}

// bindEntry is where a binding's record lies in text, and the next entry
// of its hash: 8 bytes, so that a slot of the table is 16 (four to a
// cache line) and growing it moves little. A slot with the act_id, app
// and user id's place inline was 40 bytes: the table's growth, each entry
// placed again and its new memory faulted in, was the binder's largest
// cost in a burst of new users (BENCHMARKS.md, *The binder's slots of 16
// bytes*).
type bindEntry struct {
	off  uint32 // of the record in text (see rec); 0: none (an empty slot)
	next int32  // index in more of the hash's next entry, -1: none
}

func (e *bindEntry) used() bool { return e.off != 0 }

// A record is the act_id (8 bytes, little-endian), the app (4), the user
// id's length (uvarint) and the user id.
const bindRecordHead = 12

// A record's offset is its chunk's index times bindChunk plus its place
// in the chunk, 32 bits: a map holds at most bindChunksMax chunks. No
// record crosses a chunk (one that does not fit in the last chunk starts
// the next), and a record fits in one: a user id is at most 128 bytes.
const (
	bindChunkBits = 20
	bindChunk     = 1 << bindChunkBits
	bindChunksMax = (math.MaxUint32 + 1) / bindChunk
)

// rec is the text from off, to the end of its chunk.
func (m *bindMap) rec(off uint32) []byte {
	return m.text[off>>bindChunkBits][off&(bindChunk-1):]
}

// recordMax bounds the bytes of k's record (its length's uvarint taken at
// its longest).
func recordMax(k bindKey) int {
	return bindRecordHead + binary.MaxVarintLen64 + len(k.user)
}

// textLen is the bytes of text written: every chunk before the last is
// full but for less than a record.
func (m *bindMap) textLen() int {
	if len(m.text) == 0 {
		return 0
	}
	return (len(m.text)-1)*bindChunk + len(m.text[len(m.text)-1])
}

func (m *bindMap) hashOf(app uint32, user string) uint64 {
	if m.hash != nil {
		return m.hash(app, user)
	}
	if !m.seeded {
		m.seed, m.seeded = maphash.MakeSeed(), true
	}
	return bindHash(m.seed, app, user)
}

// bindHash is an identity's hash under seed: a Binder's shard takes its
// high bits (bindShardOf), the shard's table its low bits.
func bindHash(seed maphash.Seed, app uint32, user string) uint64 {
	// maphash.String: what a Hash with this seed sums for user, without
	// zeroing a Hash's buffer per identity (2% of a batch's CPU).
	return maphash.String(seed, user) ^ uint64(app)*0x9e3779b97f4a7c15
}

// is reports whether e's record is k's.
func (m *bindMap) is(e *bindEntry, k bindKey) bool {
	r := m.rec(e.off)
	if binary.LittleEndian.Uint32(r[8:]) != k.app {
		return false
	}
	n, w := binary.Uvarint(r[bindRecordHead:])
	return n == uint64(len(k.user)) && string(r[bindRecordHead+w:bindRecordHead+w+len(k.user)]) == k.user
}

// act is the act_id of e's record.
func (m *bindMap) act(e *bindEntry) uint64 { return binary.LittleEndian.Uint64(m.rec(e.off)) }

// setAct binds e's record to act.
func (m *bindMap) setAct(e *bindEntry, act uint64) {
	binary.LittleEndian.PutUint64(m.rec(e.off), act)
}

// key is the identity of e's record, its user id in text (valid while
// text is).
func (m *bindMap) key(e *bindEntry) (bindKey, int) {
	r := m.rec(e.off)
	n, w := binary.Uvarint(r[bindRecordHead:])
	end := bindRecordHead + w + int(n)
	return bindKey{app: binary.LittleEndian.Uint32(r[8:]), user: string(r[bindRecordHead+w : end])}, end
}

// record appends k's record bound to act and returns its offset (room
// checks that it fits).
func (m *bindMap) record(k bindKey, act uint64) uint32 {
	if len(m.text) == 0 {
		m.text = append(m.text, nil)
	}
	if len(m.text[0]) == 0 {
		m.text[0] = append(m.text[0], 0) // offset 0 is no record
	}
	last := len(m.text) - 1
	if len(m.text[last])+recordMax(k) > bindChunk {
		// A full chunk's successor is as big at once: the map is large.
		m.text = append(m.text, make([]byte, 0, bindChunk))
		last++
	}
	c := m.text[last]
	off := uint32(last)<<bindChunkBits | uint32(len(c))
	c = binary.LittleEndian.AppendUint64(c, act)
	c = binary.LittleEndian.AppendUint32(c, k.app)
	c = binary.AppendUvarint(c, uint64(len(k.user)))
	m.text[last] = append(c, k.user...)
	return off
}

func (m *bindMap) get(k bindKey) (uint64, bool) {
	if m.heads.len() == 0 {
		return 0, false
	}
	return m.getH(m.hashOf(k.app, k.user), k)
}

// getH is get of an identity whose hash (hashOf) the caller has.
func (m *bindMap) getH(h uint64, k bindKey) (uint64, bool) {
	e := m.heads.get(h)
	if e == nil {
		return 0, false
	}
	for {
		if m.is(e, k) {
			return m.act(e), true
		}
		if e.next < 0 {
			return 0, false
		}
		e = &m.more[e.next]
	}
}

func (m *bindMap) put(k bindKey, act uint64) {
	if e, added := m.entry(m.hashOf(k.app, k.user), k, act); !added {
		m.setAct(e, act)
	}
}

// add binds k, whose hash is h, to act unless k is bound already, and
// returns the act_id k is bound to: one probe of the table for a new
// identity.
func (m *bindMap) add(h uint64, k bindKey, act uint64) uint64 {
	e, _ := m.entry(h, k, act)
	return m.act(e)
}

// entry returns k's entry (h its hash), adding one bound to act if k has
// none (added).
func (m *bindMap) entry(h uint64, k bindKey, act uint64) (e *bindEntry, added bool) {
	m.room(k)
	head, found := m.heads.upsert(h)
	if found {
		for e := head; ; e = &m.more[e.next] {
			if m.is(e, k) {
				return e, false
			}
			if e.next < 0 {
				break
			}
		}
	}
	n := bindEntry{off: m.record(k, act), next: -1}
	m.n++
	if !found {
		*head = n
		return head, true
	}
	// Second in its chain: the head stays in the table.
	n.next = head.next
	m.more = append(m.more, n)
	head.next = int32(len(m.more) - 1)
	return &m.more[head.next], true
}

func (m *bindMap) del(k bindKey) {
	if m.heads.len() == 0 {
		return
	}
	h := m.hashOf(k.app, k.user)
	head := m.heads.get(h)
	if head == nil {
		return
	}
	if m.is(head, k) {
		gone := *head
		if head.next < 0 {
			m.heads.del(h)
		} else {
			m.heads.set(h, m.more[head.next]) // its slot in more is left unused
		}
		m.gone(&gone)
		return
	}
	prev := head
	for i := head.next; i >= 0; i = m.more[i].next {
		if e := &m.more[i]; m.is(e, k) {
			prev.next = e.next
			m.gone(e)
			return
		}
		prev = &m.more[i]
	}
}

// gone counts e's binding out, and compacts when most of text is unused.
func (m *bindMap) gone(e *bindEntry) {
	m.n--
	_, size := m.key(e)
	if m.dead += size; m.dead > 1<<16 && m.dead > m.textLen()/2 {
		m.compact()
	}
}

// room panics, before anything changes, if k's record would take text
// past bindChunksMax chunks (some 150 million bindings in one shard of a
// binder).
func (m *bindMap) room(k bindKey) {
	size := recordMax(k)
	if size+1 > bindChunk {
		panic(fmt.Sprintf("ingress: a binding of up to %d bytes is more than a chunk holds", size))
	}
	if n := len(m.text); n >= bindChunksMax && len(m.text[n-1])+size > bindChunk {
		panic(fmt.Sprintf("ingress: a binder shard holds %d bytes of bindings, its most", m.textLen()))
	}
}

// len is the number of bindings held.
func (m *bindMap) len() int { return m.n }

func (m *bindMap) clear() {
	m.heads.clear()
	// The first chunk's memory is kept, as a slice's would be.
	if len(m.text) > 0 {
		m.text = m.text[:1]
		m.text[0] = m.text[0][:0]
	}
	m.more, m.n, m.dead = m.more[:0], 0, 0
}

// compact rebuilds the map from its live bindings.
func (m *bindMap) compact() {
	old := *m
	m.heads, m.more, m.text, m.n, m.dead = headTable{}, nil, nil, 0, 0
	old.heads.each(func(e bindEntry) {
		for {
			k, _ := old.key(&e)
			m.put(k, old.act(&e))
			if e.next < 0 {
				break
			}
			e = old.more[e.next]
		}
	})
}
