package ingress

// headTable is bindMap's table from an identity's hash to its first
// entry: open addressing with linear probing over one slice of slots (a
// hash and its entry inline, 16 bytes), at most three quarters full. A
// lookup reads the slot its hash names and, on a collision, the next
// ones, which are usually in the same or the next cache line; a Go map of
// every identity of a node went through its directory and table to a
// group first, most of them cache misses (the binder's lookups were the
// largest map probe of a burst of new users). The hashes are maphash
// values, uniform in their low bits, which index the slots.
type headTable struct {
	slots []headSlot
	n     int
}

type headSlot struct {
	hash uint64
	e    bindEntry // e.used(): the slot holds an entry
}

// headTableMin is the fewest slots a table that holds anything has.
const headTableMin = 16

// get returns the entry of hash h, nil if none.
func (t *headTable) get(h uint64) *bindEntry {
	if t.n == 0 {
		return nil
	}
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if !s.e.used() {
			return nil
		}
		if s.hash == h {
			return &s.e
		}
	}
}

// vacant reports whether the slot a lookup of h reads first is empty:
// then h has no entry.
func (t *headTable) vacant(h uint64) bool {
	return t.n == 0 || !t.slots[h&uint64(len(t.slots)-1)].e.used()
}

// set makes e, a used entry, the entry of hash h.
func (t *headTable) set(h uint64, e bindEntry) {
	p, _ := t.upsert(h)
	*p = e
}

// upsert returns the entry of hash h and true, or, when h has none, the
// place of its entry, already counted and holding h, and false: the
// caller fills it with a used entry before the table is used again. One probe either way
// (a lookup then an insert probed the same slots twice), and a table one
// entry short of three quarters full grows first.
func (t *headTable) upsert(h uint64) (*bindEntry, bool) {
	if (t.n+1)*4 > len(t.slots)*3 {
		if e := t.get(h); e != nil {
			return e, true // a full table need not grow for an entry it has
		}
		t.grow()
		return t.place(h), false
	}
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if !s.e.used() {
			s.hash = h
			t.n++
			return &s.e, false
		}
		if s.hash == h {
			return &s.e, true
		}
	}
}

// place takes the first free slot from h's own for a hash the table does
// not hold, and returns its entry, counted and holding h (the caller
// fills it with a used entry).
func (t *headTable) place(h uint64) *bindEntry {
	mask := uint64(len(t.slots) - 1)
	i := h & mask
	for t.slots[i].e.used() {
		i = (i + 1) & mask
	}
	s := &t.slots[i]
	s.hash = h
	t.n++
	return &s.e
}

// del removes the entry of hash h, moving back the entries after it that
// its slot kept from their own (no tombstones: a lookup stops at the
// first empty slot).
func (t *headTable) del(h uint64) {
	if t.n == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	i := h & mask
	for ; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if !s.e.used() {
			return
		}
		if s.hash == h {
			break
		}
	}
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		s := &t.slots[j]
		if !s.e.used() {
			break
		}
		// The entry at j may move to the hole at i unless its own slot
		// lies cyclically in (i, j].
		if home := s.hash & mask; (j-home)&mask >= (j-i)&mask {
			t.slots[i] = *s
			i = j
		}
	}
	t.slots[i] = headSlot{}
	t.n--
}

// grow doubles the slots and places every entry again, each without a
// lookup (the hashes are distinct); read in slot order, they land in two
// runs of the new table (a hash's home there is its old one or that plus
// the old size).
func (t *headTable) grow() {
	old := t.slots
	t.slots, t.n = make([]headSlot, max(headTableMin, 2*len(old))), 0
	for i := range old {
		if old[i].e.used() {
			*t.place(old[i].hash) = old[i].e
		}
	}
}

// len is the number of entries.
func (t *headTable) len() int { return t.n }

// clear empties the table, keeping its slots.
func (t *headTable) clear() {
	clear(t.slots)
	t.n = 0
}

// each calls f with every entry.
func (t *headTable) each(f func(e bindEntry)) {
	for i := range t.slots {
		if t.slots[i].e.used() {
			f(t.slots[i].e)
		}
	}
}
