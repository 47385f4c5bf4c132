package ledger

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxIndexBatch bounds the entries one indexer transaction indexes.
const maxIndexBatch = 20_000

// indexDelay is how long the indexer lets appends accumulate before it
// indexes them, unless a query is waiting.
const indexDelay = 50 * time.Millisecond

// The indexer maintains the secondary indexes (serial, SPIFFE ID, node,
// expiry, revoked) off the durable append path: their keys arrive in
// random order and would dirty many pages per commit, so they are written
// in transactions that grow with the backlog. The position reached is
// stored with the indexes (meta "indexed"), and Open catches up, so a
// crash between an append and its indexing loses nothing.

func indexedOf(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bMeta).Get(kIndexed); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// catchUp indexes every stored entry and loads the revocations (Open).
func (l *Ledger) catchUp() error {
	for !l.readOnly {
		n, err := l.indexStep()
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	return l.view(l.loadRevoked)
}

// runIndexer indexes new entries whenever kicked, until Close.
func (l *Ledger) runIndexer() {
	defer close(l.stopped)
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
		for {
			n, err := l.indexStep()
			if err != nil {
				l.log.Error("ledger indexer failed; queries will wait", "error", err)
				break
			}
			if n == 0 {
				break
			}
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
// write transaction that holds bbolt's writer lock (and delays appends)
// only puts prepared keys, in key order.
func (l *Ledger) indexStep() (int, error) {
	var from, to uint64
	batch := indexBatch{}
	err := l.view(func(tx *bolt.Tx) error {
		st, err := readTree(tx)
		if err != nil {
			return err
		}
		from = indexedOf(tx)
		to = min(st.size, from+maxIndexBatch)
		entries := tx.Bucket(bEntries)
		for i := from; i < to; i++ {
			v := entries.Get(u64(i))
			if v == nil || isPruned(v) {
				continue // reported by verify; nothing to index
			}
			e, err := DecodeEntry(v)
			if err != nil {
				l.log.Error("ledger entry cannot be indexed", "index", i, "error", err)
				continue
			}
			if err := batch.add(i, &e.Event); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || to == from {
		return 0, err
	}
	err = l.db.Update(func(tx *bolt.Tx) error {
		if got := indexedOf(tx); got != from {
			return fmt.Errorf("index position moved from %d to %d", from, got)
		}
		if err := batch.apply(tx); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(kIndexed, u64(to))
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: index: %w", err)
	}
	l.mu.Lock()
	l.indexed = to
	close(l.indexedCh)
	l.indexedCh = make(chan struct{})
	l.mu.Unlock()
	return int(to - from), nil
}

// waitIndexed waits until every entry appended before the call is in the
// secondary indexes.
func (l *Ledger) waitIndexed(ctx context.Context) error {
	if l.readOnly {
		return nil // nothing is appended; the indexes are what the file holds
	}
	l.mu.Lock()
	target := l.head.size
	l.mu.Unlock()
	for {
		l.mu.Lock()
		done, ch, closed := l.indexed >= target, l.indexedCh, l.closed
		l.mu.Unlock()
		if done {
			return nil
		}
		if closed {
			return ErrClosed
		}
		l.hurryIndexer()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
