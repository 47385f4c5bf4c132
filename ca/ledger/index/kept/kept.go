// Package kept holds the events of committed appends that the ledger's
// indexer has not indexed yet, so that it indexes them from memory instead
// of reading and decoding them back from the store.
package kept

import (
	"slices"
	"sync"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
)

// Max bounds the events kept (each with its stored encoding, ~2.5 KB with
// a certificate: at most ~50 MB while the indexer cannot write). An Add
// past it, or after a gap, drops what was kept; the indexer reads those
// entries from the store. Normally a few hundred are kept (~50 ms).
const Max = 20_000

// Run is one append's events: Events[0] at log index First, Encoded[i]
// Events[i] as stored. Never modified once kept.
type Run struct {
	First   uint64
	Events  []entry.Event
	Encoded [][]byte
}

// End is the log index after the run's last event.
func (r Run) End() uint64 { return r.First + uint64(len(r.Events)) }

// Runs are the kept runs, in log order without a gap. The zero value is
// empty and ready; safe for concurrent use.
type Runs struct {
	mu   sync.Mutex
	runs []Run
	n    int // events kept
}

// Add keeps an append's events. Appends are added in log order; one that
// does not follow the last kept, or that would keep more than Max events,
// drops what was kept.
func (k *Runs) Add(r Run) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.runs) > 0 && k.runs[len(k.runs)-1].End() != r.First {
		k.runs, k.n = nil, 0
	}
	if k.n+len(r.Events) > Max {
		k.runs, k.n = nil, 0
		return
	}
	k.runs = append(k.runs, r)
	k.n += len(r.Events)
}

// Forget drops the runs that end at or before n (indexed).
func (k *Runs) Forget(n uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	i := 0
	for i < len(k.runs) && k.runs[i].End() <= n {
		k.n -= len(k.runs[i].Events)
		i++
	}
	if i > 0 {
		k.runs = slices.Clone(k.runs[i:])
	}
}

// Take returns the kept events of [from, end), cut into runs, end being
// as far towards to as they reach without a gap: end == from (no runs)
// if from's event is not kept.
func (k *Runs) Take(from, to uint64) ([]Run, uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []Run
	end := from
	for _, r := range k.runs {
		if r.First > end || r.End() <= end || end >= to {
			continue
		}
		lo, hi := end-r.First, min(to, r.End())-r.First
		out = append(out, Run{First: end, Events: r.Events[lo:hi], Encoded: r.Encoded[lo:hi]})
		end = r.First + hi
	}
	return out, end
}

// Len returns the number of events kept.
func (k *Runs) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}
