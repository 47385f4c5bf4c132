// Package commit is the ledger's group commit: appends are written to
// the store one durable transaction at a time, an append arriving while
// the store is idle at once by its caller, those arriving during a commit
// together in the next transaction.
package commit

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
)

// maxGroupEvents bounds the events the committer puts into one
// transaction when it groups queued appends (a single larger append still
// gets a transaction of its own).
const maxGroupEvents = 10_000

// Committer is the ledger's group commit; R is what writing one append
// returns (its position in the log). Appends are written to the
// store one durable (bbolt: fsync'd) transaction at a time:
//
//   - when nothing is being committed, an append is committed at once, in
//     a transaction of its own, by its caller's goroutine: there is no
//     timer, no waiting for company and no hand-off;
//   - appends that arrive while a transaction is being committed queue up,
//     and the committer goroutine (Run) puts all of them into the next
//     transaction, which starts as soon as the current one is synced.
//     Under load, one fsync serves many appends.
//
// An append's outcome is that of the transaction holding its events: on
// success it was durable before the caller hears of it; when writing one
// append's events fails, that append alone is failed and the rest of the
// group is committed again without it; when the commit itself fails (I/O,
// fsync, the store unreachable), every append of that transaction fails
// and nothing of it is in the log (or, if the store reports
// store.ErrCommitUnknown, perhaps it is: the entries may be in the log
// although their callers were told of a failure, never the reverse). A caller that gives up while its append is still queued
// withdraws it (it is never written); once its append is in a transaction,
// the caller waits for that transaction, so its answer is always the truth.
type Committer[R any] struct {
	// update runs a read-write transaction and commits it (store.DB.Update).
	update func(func(store.Tx) error) error
	// write appends one call's events in tx, with their index entries
	// (appendTx).
	write func(tx store.Tx, evs []entry.Event) (R, error)
	// publish makes one committed append visible; called by whoever
	// committed it (run or an idle-path caller), in log order.
	publish func(r R, evs []entry.Event)

	mu     sync.Mutex
	queue  []*pendingAppend[R] // arrived, not yet in a transaction
	busy   bool                // a transaction is being written or committed
	closed bool
	wake   chan struct{} // capacity 1: there may be work
	done   chan struct{} // closed when run returns
}

// pendingAppend is one Append call on its way through the committer. Its
// result fields are written by run before done is closed.
type pendingAppend[R any] struct {
	evs   []entry.Event
	taken bool // in a transaction; guarded by Committer.mu

	res  R
	err  error
	done chan struct{}
}

// New returns a committer whose transactions run with update (committed
// and durable when it returns nil; with the ledger's lifetime as context:
// one caller giving up must not abort a transaction shared with others),
// which writes each append's events with write and makes each committed
// append visible with publish, in log order; start it with go Run().
func New[R any](update func(func(store.Tx) error) error, write func(store.Tx, []entry.Event) (R, error),
	publish func(R, []entry.Event)) *Committer[R] {
	return &Committer[R]{
		update: update, write: write, publish: publish,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

// Append commits evs and returns what writing them returned, once its
// transaction is fsync'd. It returns ErrClosed after
// close, and ctx's error if ctx ends before evs were put in a transaction
// (then nothing of evs is written).
func (c *Committer[R]) Append(ctx context.Context, evs []entry.Event) (R, error) {
	p := &pendingAppend[R]{evs: evs, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		var zero R
		return zero, entry.ErrClosed
	}
	if !c.busy && len(c.queue) == 0 {
		c.busy, p.taken = true, true
		c.mu.Unlock()
		c.commitGroup([]*pendingAppend[R]{p})
		c.idle()
		return p.res, p.err
	}
	c.queue = append(c.queue, p)
	c.mu.Unlock()
	c.signal()
	select {
	case <-p.done:
	case <-ctx.Done():
		if c.withdraw(p) {
			var zero R
			return zero, ctx.Err()
		}
		<-p.done // already being committed: its outcome is the answer
	}
	return p.res, p.err
}

// withdraw removes p from the queue if it is not yet in a transaction.
func (c *Committer[R]) withdraw(p *pendingAppend[R]) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.taken {
		return false
	}
	if i := slices.Index(c.queue, p); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
	}
	return true
}

func (c *Committer[R]) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// idle ends a commit and wakes run for the appends queued meanwhile.
func (c *Committer[R]) idle() {
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
	c.signal()
}

// Run commits queued appends until Close, then commits what is still
// queued and returns.
func (c *Committer[R]) Run() {
	defer close(c.done)
	for {
		group, ok := c.next()
		if !ok {
			return
		}
		c.commitGroup(group)
		c.idle()
	}
}

// next waits for queued appends and for the end of the commit under way,
// then takes them (up to maxGroupEvents events, at least one append) and
// marks the committer busy. It returns false once closed and drained.
func (c *Committer[R]) next() ([]*pendingAppend[R], bool) {
	for {
		c.mu.Lock()
		if c.busy {
			c.mu.Unlock()
			<-c.wake
			continue
		}
		if len(c.queue) > 0 {
			c.busy = true
			n, events := 0, 0
			for n < len(c.queue) && (n == 0 || events+len(c.queue[n].evs) <= maxGroupEvents) {
				c.queue[n].taken = true
				events += len(c.queue[n].evs)
				n++
			}
			group := slices.Clone(c.queue[:n])
			c.queue = slices.Delete(c.queue, 0, n)
			c.mu.Unlock()
			return group, true
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil, false
		}
		<-c.wake
	}
}

// commitGroup commits group in one transaction. If writing one append's
// events fails, that append fails and the others are committed again
// without it (at most len(group) attempts; a failed attempt is rolled back
// before anything is synced).
func (c *Committer[R]) commitGroup(group []*pendingAppend[R]) {
	for len(group) > 0 {
		bad, err := c.commitTx(group)
		switch {
		case err == nil:
			for _, p := range group {
				c.publish(p.res, p.evs)
			}
			finish(group, nil)
			return
		case bad < 0:
			finish(group, err)
			return
		default:
			finish(group[bad:bad+1], err)
			group = slices.Delete(group, bad, bad+1)
		}
	}
}

// commitTx writes group in one transaction and commits it. On failure it
// returns the position of the append whose events could not be written,
// or -1 if the transaction itself failed (an unavailable store fails the
// whole transaction, whatever write failed first).
func (c *Committer[R]) commitTx(group []*pendingAppend[R]) (int, error) {
	bad := -1
	err := c.update(func(tx store.Tx) error {
		for i, p := range group {
			res, err := c.write(tx, p.evs)
			if err != nil {
				bad = i
				return err
			}
			p.res = res
		}
		return nil
	})
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return -1, err
	}
	return bad, err
}

// finish hands err (nil: success) to every append of group.
func finish[R any](group []*pendingAppend[R], err error) {
	for _, p := range group {
		p.err = err
		close(p.done)
	}
}

// Close refuses new appends, waits until the queued ones are committed
// and run has returned.
func (c *Committer[R]) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.signal()
	<-c.done
}

// Queued returns the number of appends waiting for a transaction.
func (c *Committer[R]) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// Closed reports whether Close was called (new appends are refused).
func (c *Committer[R]) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
