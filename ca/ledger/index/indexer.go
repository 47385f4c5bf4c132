package index

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index/kept"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// maxIndexBatch bounds the entries one indexer transaction indexes.
const maxIndexBatch = 20_000

// indexDelay is how long the indexer lets appends accumulate before it
// indexes them, unless a query is waiting.
const indexDelay = 50 * time.Millisecond

// The indexer brings the secondary indexes (serial, SPIFFE ID, node,
// expiry, revoked, agent records) up to date when appends did not index
// their own entries: every append on the ledger's own bbolt file (its
// index keys are cheaper written in one pass for many appends: see the
// ledger's appendTx), and on a shared store a log written by an older
// binary or entries after an index write failed. It takes the events from
// memory (Committed) or decodes the stored entries, and writes their
// index keys in transactions that grow with the backlog. The position reached is stored
// with the indexes (meta "indexed"), and Open catches up, so a crash
// between an append and its indexing loses nothing. On a shared store
// every replica's indexer works on the one stored position: whoever
// commits a step first wins (an append indexing its own entries moves it
// too), the others see the position moved and go on from there.

// Stored returns the index position stored in tx.
func Stored(tx store.Tx) uint64 { return indexedOf(tx) }

func indexedOf(tx store.Tx) uint64 {
	if v := tree.Bucket(tx, tree.Meta).Get(tree.KeyIndexed); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// errIndexMoved: another replica indexed the range this one prepared;
// the indexer reads the position again and goes on.
var errIndexMoved = errors.New("ledger: index position moved")

// Index is the certificate index of a ledger: its queries (Entry, Get,
// List) wait until every entry appended before them is indexed. The
// functions that drive it (CatchUp, Run, Kick, Advance, Wait, Read, ...)
// are functions, not methods, so that they are not promoted to the
// Ledger that embeds the Index.
type Index struct {
	view      func(context.Context, func(store.Tx) error) error
	update    func(context.Context, func(store.Tx) error) error
	ctx       context.Context
	log       *slog.Logger
	clock     clock.Clock
	readOnly  bool
	shared    bool
	published func() uint64
	closed    func() bool

	mu        sync.Mutex
	indexed   uint64        // entries [0, indexed) are in the secondary indexes
	indexErr  error         // the indexer's last failure, nil after a success
	indexedCh chan struct{} // closed when indexed advances or the indexer fails
	kept      kept.Runs     // committed events not yet indexed (Committed)

	kick   chan struct{} // wakes the indexer after indexDelay
	urgent chan struct{} // wakes the indexer now
}

// Config is what an Index needs of its ledger.
type Config struct {
	// View and Update run read and read-write transactions of the store
	// (View guards a damaged file in forensic mode).
	View, Update func(context.Context, func(store.Tx) error) error
	// Ctx is the ledger's lifetime.
	Ctx   context.Context
	Log   *slog.Logger
	Clock clock.Clock
	// ReadOnly: forensic mode, nothing is appended or indexed. Shared:
	// other replicas append to the store too.
	ReadOnly, Shared bool
	// Published returns the size of the log as published; Closed
	// whether the ledger is closed.
	Published func() uint64
	Closed    func() bool
}

// New returns the index of a ledger.
func New(c Config) *Index {
	return &Index{
		view: c.View, update: c.Update, ctx: c.Ctx, log: c.Log, clock: c.Clock,
		readOnly: c.ReadOnly, shared: c.Shared, published: c.Published, closed: c.Closed,
		indexedCh: make(chan struct{}), kick: make(chan struct{}, 1), urgent: make(chan struct{}, 1),
	}
}

// Read runs fn in a read transaction once every entry appended before the
// call is indexed.
func Read(x *Index, ctx context.Context, fn func(store.Tx) error) error {
	if err := Wait(x, ctx); err != nil {
		return err
	}
	return x.view(ctx, fn)
}

// View runs fn in a read transaction, without waiting for the indexer
// (after Wait).
func View(x *Index, ctx context.Context, fn func(store.Tx) error) error {
	return x.view(ctx, fn)
}

// CatchUp indexes every stored entry (Open, New).
func CatchUp(x *Index) error {
	for !x.readOnly {
		n, err := x.indexStep()
		if errors.Is(err, errIndexMoved) {
			continue // another replica indexed: read the position again
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
	return nil
}

// Run indexes new entries whenever kicked, until stop is closed.
func Run(x *Index, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-x.urgent:
		case <-x.kick:
			t := time.NewTimer(indexDelay)
			select {
			case <-stop:
				t.Stop()
				return
			case <-x.urgent:
			case <-t.C:
			}
			t.Stop()
		}
		x.indexAll()
	}
}

// indexAll indexes what was appended up to the pass, in steps of at most
// maxIndexBatch, until a step fails; a failure is logged and handed to the
// waiting queries.
func (x *Index) indexAll() {
	for {
		n, err := x.indexStep()
		if errors.Is(err, errIndexMoved) {
			continue // lost a race with another replica's indexer: normal
		}
		if err != nil {
			if x.ctx.Err() == nil {
				x.log.Error("ledger indexer failed; queries wait for it", "error", err)
			}
			x.mu.Lock()
			x.indexErr = err
			close(x.indexedCh)
			x.indexedCh = make(chan struct{})
			x.mu.Unlock()
			return
		}
		if n < maxIndexBatch {
			return // what was appended meanwhile waits for its kick: passes stay large
		}
	}
}

// Kick tells the indexer that entries were appended.
func Kick(x *Index) {
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// hurryIndexer tells the indexer that a query waits for it.
func (x *Index) hurryIndexer() {
	select {
	case x.urgent <- struct{}{}:
	default:
	}
}

// Committed hands the indexer the events of a committed append whose
// indexing was left to it (evs[0] at index first, encoded[i] evs[i] as
// stored), in log order, so that it indexes them from memory.
func Committed(x *Index, first uint64, evs []entry.Event, encoded [][]byte) {
	x.kept.Add(kept.Run{First: first, Events: evs, Encoded: encoded})
}

// memoryBatch returns the index entries of [from, end) from the kept
// events, end being as far towards to as they reach, or nil if from's
// event is not kept (yet: then the next pass has it, or the store).
func (x *Index) memoryBatch(from, to uint64) (*indexBatch, uint64, error) {
	runs, end := x.kept.Take(from, to)
	if end == from {
		return nil, from, nil
	}
	batch := newIndexBatch(int(end - from))
	for _, r := range runs {
		if err := batch.addCommitted(r.First, r.Events, r.Encoded); err != nil {
			return nil, from, err
		}
	}
	return batch, end, nil
}

// indexStep indexes up to maxIndexBatch unindexed entries and returns
// how many. Entries are taken from memory (Committed) or read and decoded
// in a read transaction, so the write transaction that holds the store's
// writer lock (and delays appends) only puts prepared keys, in key order. errIndexMoved if
// another replica indexed meanwhile.
func (x *Index) indexStep() (int, error) {
	var from, to uint64
	var batch *indexBatch
	err := x.view(x.ctx, func(tx store.Tx) error {
		st, err := tree.Read(tx)
		if err != nil {
			return err
		}
		from = indexedOf(tx)
		to = min(st.Size, from+maxIndexBatch)
		if batch, to, err = x.memoryBatch(from, to); batch != nil || err != nil {
			return err
		}
		to = min(st.Size, from+maxIndexBatch)
		batch = &indexBatch{}
		return x.prepareIndex(tx, batch, from, to)
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: index: %w", err)
	}
	Advance(x, from) // another replica may have indexed
	if to == from {
		return 0, nil
	}
	err = x.update(x.ctx, func(tx store.Tx) error {
		if got := indexedOf(tx); got != from {
			return fmt.Errorf("%w from %d to %d", errIndexMoved, from, got)
		}
		if err := batch.apply(tx); err != nil {
			return err
		}
		return tree.Bucket(tx, tree.Meta).Put(tree.KeyIndexed, tree.Key(to))
	})
	if errors.Is(err, errIndexMoved) {
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("ledger: index: %w", err)
	}
	Advance(x, to)
	return int(to - from), nil
}

// prepareIndex collects the index entries of entries [from, to).
func (x *Index) prepareIndex(tx store.Tx, batch *indexBatch, from, to uint64) error {
	if from >= to {
		return nil
	}
	entries := tree.NewSeqReader(tree.Bucket(tx, tree.Entries), from)
	for i := from; i < to; i++ {
		v := entries.Get(i)
		if v == nil || tree.IsPruned(v) {
			continue // reported by verify; nothing to index
		}
		e, err := entry.DecodeEvent(v)
		if err != nil {
			x.log.Error("ledger entry cannot be indexed", "index", i, "error", err)
			continue
		}
		if err := batch.add(i, &e.Event, nil); err != nil {
			return err
		}
	}
	return nil
}

// Advance moves the index position forward to n and wakes the queries
// waiting for it.
func Advance(x *Index, n uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if n <= x.indexed {
		return
	}
	x.kept.Forget(n)
	x.indexed, x.indexErr = n, nil
	close(x.indexedCh)
	x.indexedCh = make(chan struct{})
}

// Position returns the index position: entries [0, Position) are in the
// indexes.
func Position(x *Index) uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.indexed
}

// Wake wakes the queries waiting for the indexer (Close: they then see
// the ledger closed).
func Wake(x *Index) {
	x.mu.Lock()
	defer x.mu.Unlock()
	close(x.indexedCh)
	x.indexedCh = make(chan struct{})
}

// Wait waits until every entry appended before the call (on a
// shared store: by any replica) is in the secondary indexes. It fails
// if the indexer fails while it waits.
func Wait(x *Index, ctx context.Context) error {
	if x.readOnly {
		return nil // nothing is appended; the indexes are what the file holds
	}
	target, err := x.indexTarget(ctx)
	if err != nil {
		return err
	}
	for waited := false; ; waited = true {
		x.mu.Lock()
		done, ch, ierr := x.indexed >= target, x.indexedCh, x.indexErr
		x.mu.Unlock()
		closed := x.closed()
		switch {
		case done:
			return nil
		case closed:
			return entry.ErrClosed
		case waited && ierr != nil:
			return fmt.Errorf("ledger: the indexes cannot be brought up to date: %w", ierr)
		}
		x.hurryIndexer()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// indexTarget returns the log size a query must find indexed: the
// published head, or on a shared store the stored head, which includes
// what other replicas appended (a certificate issued through one replica
// can be revoked through another at once).
func (x *Index) indexTarget(ctx context.Context) (uint64, error) {
	if !x.shared {
		return x.published(), nil
	}
	var size, indexed uint64
	err := x.view(ctx, func(tx store.Tx) error {
		st, err := tree.Read(tx)
		size, indexed = st.Size, indexedOf(tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: %w", err)
	}
	Advance(x, indexed)
	return size, nil
}
