// Package follow is the log as this replica published it: the tree head
// and the signal of its growth, every committed append applied once, in
// log order (Publish), the other replicas' appends followed on a shared
// store (Run), and the readers that follow the log (Watch, Export).
package follow

import (
	"context"
	"log/slog"
	"sync"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// Appended is what one append's transaction wrote: the index of its
// first event, the tree head after its last, and the stored index position
// after it (entries [0, indexed) are in the secondary indexes); Encoded
// holds its events as stored (evs[i] at First+i) when it left their
// indexing to the indexer, else nil.
type Appended struct {
	First   uint64
	Head    tree.Head
	Indexed uint64
	Encoded [][]byte
}

// Published is the log as this replica published it. The functions that
// drive it (Publish, Run, FollowTo, SetHead, Head, Wake) are functions,
// not methods, so that they are not promoted to the Ledger that embeds it.
type Published struct {
	c Config

	pubMu sync.Mutex // serializes publishing (Publish, follow): log order, exactly once

	mu       sync.Mutex
	head     tree.Head     // latest published tree (entries [0, head.Size) applied)
	appendCh chan struct{} // closed when the log grows
}

// Config is what the published log needs of its ledger.
type Config struct {
	// View runs a read transaction of the store; Read one once the
	// indexes are up to date; Changed returns the store's change signal.
	View, Read func(context.Context, func(store.Tx) error) error
	Changed    func() <-chan struct{}
	// Ctx is the ledger's lifetime; Log receives operational logs.
	Ctx context.Context
	Log *slog.Logger
	// Shared: other replicas append to the store too.
	Shared bool
	// Closed reports whether the ledger is closed.
	Closed func() bool
	// Apply applies committed events (evs[0] at index first) to the state
	// that follows from the log (revocations, bans), before the head
	// moves past them.
	Apply func(first uint64, evs []entry.Event)
	// Indexed records a stored index position; Backlog wakes the indexer
	// when an append left entries to index; Stored records a checkpoint
	// read from the store.
	Indexed func(n uint64)
	Backlog func()
	Stored  func(cp []byte)
}

// New returns the published log of a ledger, empty until SetHead.
func New(c Config) *Published {
	return &Published{c: c, appendCh: make(chan struct{})}
}

// Size returns the number of entries in the log as published by this
// ledger: on a shared store, other replicas' latest appends count once the
// follower has applied them (within a second).
func (p *Published) Size() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.head.Size
}

// Head returns the published tree head.
func Head(p *Published) tree.Head {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.head
}

// SetHead sets the published head (Open and New, as loaded).
func SetHead(p *Published, head tree.Head) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.head = head
}

// Wake wakes the readers waiting for the log to grow (Close: they then
// see the ledger closed).
func Wake(p *Published) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.appendCh)
	p.appendCh = make(chan struct{})
}

// Publish makes the committed append evs (a says where it went, the tree
// head after it and the stored index position) visible. The committer
// calls it in log order, before the append's caller hears of the commit.
// Entries other replicas appended before it are applied first; entries
// the follower already applied are skipped. The indexer is woken only
// when the append left a backlog to index.
func Publish(p *Published, a Appended, evs []entry.Event) {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	first := a.First
	if first > p.Size() {
		if err := p.followLocked(p.c.Ctx, first); err != nil {
			p.c.Log.Error("ledger: cannot read the entries other replicas appended; they will be published once the store answers", "error", err)
		}
	}
	p.c.Indexed(a.Indexed)
	if a.Indexed < a.Head.Size {
		p.c.Backlog()
	}
	cur := p.Size()
	end := first + uint64(len(evs))
	if first > cur || end <= cur {
		return // a gap still unread (the follower will publish), or already published
	}
	p.apply(a.Head, cur, evs[cur-first:])
}

// apply hands committed events (evs[0] at index first; head is the tree
// after the last) to Config.Apply, then publishes the head and wakes the
// waiters. pubMu is held.
func (p *Published) apply(head tree.Head, first uint64, evs []entry.Event) {
	p.c.Apply(first, evs)
	p.mu.Lock()
	if head.Size > p.head.Size {
		p.head = head
	}
	close(p.appendCh)
	p.appendCh = make(chan struct{})
	p.mu.Unlock()
}
