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
// identity in one place. Identities sharing a hash chain their further
// entries in a slice. Not safe for concurrent use (a bindShard's lock
// guards it). The zero value is empty.
type bindMap struct {
	heads headTable   // identity hash -> its first entry
	more  []bindEntry // further entries of a hash, chained by next
	text  []byte      // the records, back to back after one unused byte
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
	off  uint32 // of the record in text; 0: none (an empty slot)
	next int32  // index in more of the hash's next entry, -1: none
}

func (e *bindEntry) used() bool { return e.off != 0 }

// A record is the act_id (8 bytes, little-endian), the app (4), the user
// id's length (uvarint) and the user id.
const bindRecordHead = 12

// bindTextMax is the most text a map holds: records' offsets are 32 bits.
const bindTextMax = math.MaxUint32

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
	r := m.text[e.off:]
	if binary.LittleEndian.Uint32(r[8:]) != k.app {
		return false
	}
	n, w := binary.Uvarint(r[bindRecordHead:])
	return n == uint64(len(k.user)) && string(r[bindRecordHead+w:bindRecordHead+w+len(k.user)]) == k.user
}

// act is the act_id of e's record.
func (m *bindMap) act(e *bindEntry) uint64 { return binary.LittleEndian.Uint64(m.text[e.off:]) }

// setAct binds e's record to act.
func (m *bindMap) setAct(e *bindEntry, act uint64) {
	binary.LittleEndian.PutUint64(m.text[e.off:], act)
}

// key is the identity of e's record, its user id in text (valid while
// text is).
func (m *bindMap) key(e *bindEntry) (bindKey, int) {
	r := m.text[e.off:]
	n, w := binary.Uvarint(r[bindRecordHead:])
	end := bindRecordHead + w + int(n)
	return bindKey{app: binary.LittleEndian.Uint32(r[8:]), user: string(r[bindRecordHead+w : end])}, end
}

// record appends k's record bound to act and returns its offset (room
// checks that it fits).
func (m *bindMap) record(k bindKey, act uint64) uint32 {
	if len(m.text) == 0 {
		m.text = append(m.text, 0) // offset 0 is no record
	}
	off := len(m.text)
	m.text = binary.LittleEndian.AppendUint64(m.text, act)
	m.text = binary.LittleEndian.AppendUint32(m.text, k.app)
	m.text = binary.AppendUvarint(m.text, uint64(len(k.user)))
	m.text = append(m.text, k.user...)
	return uint32(off)
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
	if m.dead += size; m.dead > 1<<16 && m.dead > len(m.text)/2 {
		m.compact()
	}
}

// room panics, before anything changes, if k's record would take text
// past bindTextMax (some 150 million bindings in one shard of a binder).
func (m *bindMap) room(k bindKey) {
	if uint64(len(m.text))+1+bindRecordHead+binary.MaxVarintLen64+uint64(len(k.user)) > bindTextMax {
		panic(fmt.Sprintf("ingress: a binder shard holds %d bytes of bindings, its most", len(m.text)))
	}
}

// len is the number of bindings held.
func (m *bindMap) len() int { return m.n }

func (m *bindMap) clear() {
	m.heads.clear()
	m.more, m.text, m.n, m.dead = m.more[:0], m.text[:0], 0, 0
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
