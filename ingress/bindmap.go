package ingress

import "hash/maphash"

// bindMap maps (app, user id) to an act_id, like a map[bindKey]uint64,
// but holds no pointer per binding: the user ids lie back to back in one
// byte slice, and a table from the identity's hash (headTable) holds the
// rest of the entry inline, so the collector neither marks a string per
// bound user nor scans the table (an owner's holds every user of the
// node), and a lookup touches the table's slot and the user id's bytes. Identities sharing a hash chain their further
// entries in a slice. Not safe for concurrent use (a bindShard's lock
// guards it). The zero value is empty.
type bindMap struct {
	heads headTable   // identity hash -> its first entry
	more  []bindEntry // further entries of a hash, chained by next
	text  []byte      // the user ids, back to back
	n     int         // bindings held
	dead  int         // bytes of text no binding uses
	// hash is the identities' hash (nil: maphash with seed); tests set a
	// poor one to make chains.
	hash   func(app uint32, user string) uint64
	seed   maphash.Seed
	seeded bool
}

type bindEntry struct {
	act  uint64
	off  uint64 // of the user id in text
	n    uint32 // its length
	app  uint32
	next int32 // index in more of the hash's next entry, -1: none
	used bool  // in headTable: the slot holds this entry
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

func (m *bindMap) is(e *bindEntry, k bindKey) bool {
	return e.app == k.app && string(m.text[e.off:e.off+uint64(e.n)]) == k.user
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
			return e.act, true
		}
		if e.next < 0 {
			return 0, false
		}
		e = &m.more[e.next]
	}
}

func (m *bindMap) put(k bindKey, act uint64) {
	if e, added := m.entry(m.hashOf(k.app, k.user), k, act); !added {
		e.act = act
	}
}

// add binds k, whose hash is h, to act unless k is bound already, and
// returns the act_id k is bound to: one probe of the table for a new
// identity.
func (m *bindMap) add(h uint64, k bindKey, act uint64) uint64 {
	e, _ := m.entry(h, k, act)
	return e.act
}

// entry returns k's entry (h its hash), adding one bound to act if k has
// none (added).
func (m *bindMap) entry(h uint64, k bindKey, act uint64) (e *bindEntry, added bool) {
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
	n := bindEntry{act: act, off: uint64(len(m.text)), n: uint32(len(k.user)), app: k.app, next: -1, used: true}
	m.text = append(m.text, k.user...)
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
	if m.dead += int(e.n); m.dead > 1<<16 && m.dead > len(m.text)/2 {
		m.compact()
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
			m.put(bindKey{app: e.app, user: string(old.text[e.off : e.off+uint64(e.n)])}, e.act)
			if e.next < 0 {
				break
			}
			e = old.more[e.next]
		}
	})
}
