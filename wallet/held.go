package wallet

import "slices"

// held are the accounts this node's booking just changed whose journal
// the Feed has not tombstoned yet (Booked, Moved): their reads skip Redis
// until the poll each run names has written its tombstones. A run is the
// act_ids of one hand-over, sorted, taken as they came; a poll drops the
// runs it covered whole. A map of act_id to poll took an insert per
// booked grant and a pass over every entry per poll (~3% of a node's CPU
// in a burst of new users; BENCHMARKS.md, *The wallet's holds in runs*).
// Not safe for concurrent use (Wallets.pendMu guards it).
type held struct {
	runs []heldRun
	n    int // act_ids in all runs (an account may count more than once)
}

type heldRun struct {
	gen  uint64   // the first poll whose tombstones cover the run
	acts []uint64 // sorted
}

// heldRunsMax bounds the runs held: past it they merge into one (polls
// drop a few runs each; they pile up only while polls cannot write their
// tombstones, and then a read looks up each run).
const heldRunsMax = 64

// add holds acts, which it keeps and sorts, until poll gen.
func (h *held) add(gen uint64, acts []uint64) {
	if len(acts) == 0 {
		return
	}
	slices.Sort(acts)
	h.runs = append(h.runs, heldRun{gen: gen, acts: acts})
	h.n += len(acts)
	if len(h.runs) > heldRunsMax {
		h.merge()
	}
}

// merge makes the runs one, each act_id in it once, held until the last
// of their polls: a read of one of them skips Redis a little longer, and
// the runs hold no more act_ids than there are accounts.
func (h *held) merge() {
	all := make([]uint64, 0, h.n)
	var gen uint64
	for _, r := range h.runs {
		all = append(all, r.acts...)
		gen = max(gen, r.gen)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	clear(h.runs)
	h.runs = append(h.runs[:0], heldRun{gen: gen, acts: all})
	h.n = len(all)
}

// has reports whether act is held.
func (h *held) has(act uint64) bool {
	for i := range h.runs {
		if _, found := slices.BinarySearch(h.runs[i].acts, act); found {
			return true
		}
	}
	return false
}

// release drops the runs that poll gen covers.
func (h *held) release(gen uint64) {
	kept := h.runs[:0]
	for _, r := range h.runs {
		if r.gen <= gen {
			h.n -= len(r.acts)
			continue
		}
		kept = append(kept, r)
	}
	clear(h.runs[len(kept):])
	h.runs = kept
}

// clear drops every run.
func (h *held) clear() {
	clear(h.runs)
	h.runs, h.n = h.runs[:0], 0
}

// len is how many act_ids are held, counted once per run that holds them.
func (h *held) len() int { return h.n }
