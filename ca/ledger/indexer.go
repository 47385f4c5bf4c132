package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// maxIndexBatch bounds the entries one indexer transaction indexes.
const maxIndexBatch = 20_000

// indexDelay is how long the indexer lets appends accumulate before it
// indexes them, unless a query is waiting.
const indexDelay = 50 * time.Millisecond

// The indexer brings the secondary indexes (serial, SPIFFE ID, node,
// expiry, revoked, agent records) up to date when appends could not index
// their own entries (appendTx does, in the append's transaction, whenever
// the indexes are up to date): a log written by an older binary, whose
// appends left indexing to the indexer, or entries after an index write
// failed. It decodes the stored entries and writes their index keys in
// transactions that grow with the backlog. The position reached is stored
// with the indexes (meta "indexed"), and Open catches up, so a crash
// between an append and its indexing loses nothing. On a shared store
// every replica's indexer works on the one stored position: whoever
// commits a step first wins (an append indexing its own entries moves it
// too), the others see the position moved and go on from there.

func indexedOf(tx store.Tx) uint64 {
	if v := tree.Bucket(tx, tree.Meta).Get(tree.KeyIndexed); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// errIndexMoved: another replica indexed the range this one prepared;
// the indexer reads the position again and goes on.
var errIndexMoved = errors.New("ledger: index position moved")

// catchUp indexes every stored entry and loads the state that follows
// from the log (Open, New).
func (l *Ledger) catchUp() error {
	for !l.readOnly {
		n, err := l.indexStep()
		if errors.Is(err, errIndexMoved) {
			continue // another replica indexed: read the position again
		}
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	return l.view(l.ctx, l.loadState)
}

// loadState loads, from one snapshot, the tree head, the latest
// checkpoint, the index position and the revocations and bans in force:
// from the indexes, then from the entries not yet indexed (on a shared
// store another replica may append after catchUp's last step).
func (l *Ledger) loadState(tx store.Tx) error {
	if err := l.loadRevoked(tx); err != nil {
		return err
	}
	if err := l.load(tx); err != nil {
		return err
	}
	if l.indexed >= l.head.Size {
		return nil
	}
	entries := tree.NewSeqReader(tree.Bucket(tx, tree.Entries), l.indexed)
	for i := l.indexed; i < l.head.Size; i++ {
		v := entries.Get(i)
		if v == nil || tree.IsPruned(v) {
			continue
		}
		if e, err := entry.DecodeEvent(v); err == nil {
			l.foldLocked(i, &e.Event) // no waiter exists yet
		}
	}
	return nil
}

// runIndexer indexes new entries whenever kicked, until Close.
func (l *Ledger) runIndexer() {
	defer l.bg.Done()
	for {
		select {
		case <-l.stop:
			return
		case <-l.urgent:
		case <-l.kick:
			t := time.NewTimer(indexDelay)
			select {
			case <-l.stop:
				t.Stop()
				return
			case <-l.urgent:
			case <-t.C:
			}
			t.Stop()
		}
		l.indexAll()
	}
}

// indexAll indexes until nothing is left or a step fails; a failure is
// logged and handed to the waiting queries.
func (l *Ledger) indexAll() {
	for {
		n, err := l.indexStep()
		if errors.Is(err, errIndexMoved) {
			continue // lost a race with another replica's indexer: normal
		}
		if err != nil {
			if l.ctx.Err() == nil {
				l.log.Error("ledger indexer failed; queries wait for it", "error", err)
			}
			l.mu.Lock()
			l.indexErr = err
			close(l.indexedCh)
			l.indexedCh = make(chan struct{})
			l.mu.Unlock()
			return
		}
		if n == 0 {
			return
		}
	}
}

// kickIndexer tells the indexer that entries were appended.
func (l *Ledger) kickIndexer() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// hurryIndexer tells the indexer that a query waits for it.
func (l *Ledger) hurryIndexer() {
	select {
	case l.urgent <- struct{}{}:
	default:
	}
}

// indexStep indexes up to maxIndexBatch unindexed entries and returns
// how many. Entries are read and decoded in a read transaction, so the
// write transaction that holds the store's writer lock (and delays
// appends) only puts prepared keys, in key order. errIndexMoved if
// another replica indexed meanwhile.
func (l *Ledger) indexStep() (int, error) {
	var from, to uint64
	batch := indexBatch{}
	err := l.view(l.ctx, func(tx store.Tx) error {
		st, err := tree.Read(tx)
		if err != nil {
			return err
		}
		from = indexedOf(tx)
		to = min(st.Size, from+maxIndexBatch)
		return l.prepareIndex(tx, &batch, from, to)
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: index: %w", err)
	}
	l.advanceIndexed(from) // another replica may have indexed
	if to == from {
		return 0, nil
	}
	err = l.db.Update(l.ctx, func(tx store.Tx) error {
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
	l.advanceIndexed(to)
	return int(to - from), nil
}

// prepareIndex collects the index entries of entries [from, to).
func (l *Ledger) prepareIndex(tx store.Tx, batch *indexBatch, from, to uint64) error {
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
			l.log.Error("ledger entry cannot be indexed", "index", i, "error", err)
			continue
		}
		if err := batch.add(i, &e.Event, nil); err != nil {
			return err
		}
	}
	return nil
}

// advanceIndexed moves the index position forward to n.
func (l *Ledger) advanceIndexed(n uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.advanceIndexedLocked(n)
}

// waitIndexed waits until every entry appended before the call (on a
// shared store: by any replica) is in the secondary indexes. It fails
// if the indexer fails while it waits.
func (l *Ledger) waitIndexed(ctx context.Context) error {
	if l.readOnly {
		return nil // nothing is appended; the indexes are what the file holds
	}
	target, err := l.indexTarget(ctx)
	if err != nil {
		return err
	}
	for waited := false; ; waited = true {
		l.mu.Lock()
		done, ch, closed, ierr := l.indexed >= target, l.indexedCh, l.closed, l.indexErr
		l.mu.Unlock()
		switch {
		case done:
			return nil
		case closed:
			return entry.ErrClosed
		case waited && ierr != nil:
			return fmt.Errorf("ledger: the indexes cannot be brought up to date: %w", ierr)
		}
		l.hurryIndexer()
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
func (l *Ledger) indexTarget(ctx context.Context) (uint64, error) {
	if !l.shared {
		return l.Size(), nil
	}
	var size, indexed uint64
	err := l.view(ctx, func(tx store.Tx) error {
		st, err := tree.Read(tx)
		size, indexed = st.Size, indexedOf(tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: %w", err)
	}
	l.advanceIndexed(indexed)
	return size, nil
}
