// Package pgtx is one transaction of the PostgreSQL store (package
// pgstore): a store.Tx on one connection whose transaction the store has
// begun. An Update's writes wait in an overlay, which its reads consult
// before the database, until Queue adds them to the store's commit batch;
// cursors merge the overlay with the database's keys, fetched page by
// page. The buckets known to exist are remembered across transactions
// (KnownBuckets), as buckets are never deleted.
package pgtx

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/castellan-dev/castellan/ca/store"
)

// Size limits: a key, with its bucket's name, must fit in one PostgreSQL
// B-tree index entry (at most 2704 bytes).
const (
	MaxKeySize        = 2048
	MaxBucketNameSize = 256
)

var (
	errTxDone   = errors.New("pgstore: transaction used after it ended")
	errNoKey    = errors.New("pgstore: empty key")
	errNoBucket = errors.New("pgstore: empty bucket name")
)

// Tx is a store.Tx. An Update's writes live in an overlay until commit;
// reads consult the overlay, then the database. The first failed read is
// kept in err and fails the transaction.
type Tx struct {
	ctx      context.Context
	conn     *pgx.Conn
	keyspace string
	buckets  *KnownBuckets
	snapshot int64 // keyspace version the transaction reads at
	writable bool
	done     bool
	err      error

	created map[string]bool     // buckets created by this Update
	writes  map[string]*overlay // by bucket name
}

var _ store.Tx = (*Tx)(nil)

// New is a transaction of keyspace on conn, inside the PostgreSQL
// transaction the caller has begun, reading at version snapshot.
func New(ctx context.Context, conn *pgx.Conn, keyspace string, buckets *KnownBuckets, snapshot int64, writable bool) *Tx {
	return &Tx{ctx: ctx, conn: conn, keyspace: keyspace, buckets: buckets, snapshot: snapshot, writable: writable}
}

// Writable implements store.Tx.
func (t *Tx) Writable() bool { return t.writable }

// End marks the transaction over: later reads return nothing, later
// writes fail.
func (t *Tx) End() { t.done = true }

// Err is the first read that failed, which fails the transaction.
func (t *Tx) Err() error { return t.err }

// fail records a failed read; later reads return nothing.
func (t *Tx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// usable reports whether reads may still run.
func (t *Tx) usable() bool { return !t.done && t.err == nil }

// Bucket implements store.Tx.
func (t *Tx) Bucket(name []byte) store.Bucket {
	if !t.usable() || len(name) == 0 {
		return nil
	}
	key := string(name)
	if t.created[key] || t.buckets.known(key, t.snapshot) {
		return &bucket{tx: t, name: key}
	}
	var exists bool
	if err := t.conn.QueryRow(t.ctx, sqlBucketExists, t.keyspace, name).Scan(&exists); err != nil {
		t.fail(err)
		return nil
	}
	if !exists {
		return nil
	}
	t.buckets.saw(key, t.snapshot)
	return &bucket{tx: t, name: key}
}

// CreateBucketIfNotExists implements store.Tx; the bucket is created at
// commit.
func (t *Tx) CreateBucketIfNotExists(name []byte) (store.Bucket, error) {
	if err := t.checkWrite(); err != nil {
		return nil, err
	}
	if len(name) == 0 {
		return nil, errNoBucket
	}
	if len(name) > MaxBucketNameSize {
		return nil, fmt.Errorf("pgstore: bucket name of %d bytes: at most %d", len(name), MaxBucketNameSize)
	}
	if b := t.Bucket(name); b != nil {
		return b, nil
	}
	if t.err != nil {
		return nil, fmt.Errorf("pgstore: create bucket: %w: %w", store.ErrUnavailable, t.err)
	}
	if t.created == nil {
		t.created = map[string]bool{}
	}
	t.created[string(name)] = true
	return &bucket{tx: t, name: string(name)}, nil
}

func (t *Tx) checkWrite() error {
	if t.done {
		return errTxDone
	}
	if !t.writable {
		return store.ErrReadOnly
	}
	return nil
}

// Empty reports whether the Update wrote nothing.
func (t *Tx) Empty() bool { return len(t.created) == 0 && len(t.writes) == 0 }

// Queue adds the Update's writes to b, the commit batch: the buckets it
// created, then its puts and deletes.
func (t *Tx) Queue(b *pgx.Batch) {
	if len(t.created) > 0 {
		names := make([][]byte, 0, len(t.created))
		for n := range t.created {
			names = append(names, []byte(n))
		}
		b.Queue(sqlCreateBuckets, t.keyspace, names)
	}
	var pb, pk, pv, db, dk [][]byte
	for _, name := range slices.Sorted(maps.Keys(t.writes)) {
		for _, e := range t.writes[name].sorted() {
			if e.del {
				db, dk = append(db, []byte(name)), append(dk, []byte(e.key))
			} else {
				pb, pk, pv = append(pb, []byte(name)), append(pk, []byte(e.key)), append(pv, e.value)
			}
		}
	}
	if len(pk) > 0 {
		b.Queue(sqlPut, t.keyspace, pb, pk, pv)
	}
	if len(dk) > 0 {
		b.Queue(sqlDelete, t.keyspace, db, dk)
	}
}

// Committed records that the Update committed as keyspace version
// version: the buckets it created exist from then on.
func (t *Tx) Committed(version int64) {
	for name := range t.created {
		t.buckets.saw(name, version)
	}
}

// KnownBuckets remembers the buckets of a keyspace known to exist, each
// with a version at which it did: a transaction whose snapshot is at that
// version or later may trust it (buckets are never deleted). The zero
// value is ready; it is safe for concurrent use.
type KnownBuckets struct {
	mu sync.Mutex
	m  map[string]int64
}

// known reports whether name is known to exist in a snapshot at version
// at.
func (k *KnownBuckets) known(name string, at int64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[name]
	return ok && v <= at
}

// saw records that name exists at version at.
func (k *KnownBuckets) saw(name string, at int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]int64{}
	}
	if v, ok := k.m[name]; !ok || at < v {
		k.m[name] = at
	}
}

// overlay is an Update's pending writes to one bucket.
type overlay struct {
	m     map[string]entry
	order []entry // cache of sorted(), dropped on write
}

type entry struct {
	key   string
	value []byte
	del   bool
}

func (o *overlay) set(e entry) {
	o.m[e.key] = e
	o.order = nil
}

// sorted returns the writes in key order. The slice is never modified
// afterwards, so cursors may keep it.
func (o *overlay) sorted() []entry {
	if o.order == nil {
		s := make([]entry, 0, len(o.m))
		for _, e := range o.m {
			s = append(s, e)
		}
		slices.SortFunc(s, func(a, b entry) int { return strings.Compare(a.key, b.key) })
		o.order = s
	}
	return o.order
}

// bucket is a store.Bucket within a txn.
type bucket struct {
	tx   *Tx
	name string
}

func (b *bucket) overlay() *overlay { return b.tx.writes[b.name] }

func (b *bucket) Get(key []byte) []byte {
	t := b.tx
	if !t.usable() {
		return nil
	}
	if o := b.overlay(); o != nil {
		if e, ok := o.m[string(key)]; ok {
			if e.del {
				return nil
			}
			return e.value
		}
	}
	var v []byte
	err := t.conn.QueryRow(t.ctx, sqlGet, t.keyspace, []byte(b.name), key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		t.fail(err)
		return nil
	}
	if v == nil {
		v = []byte{}
	}
	return v
}

func (b *bucket) Put(key, value []byte) error {
	if err := b.checkKey(key); err != nil {
		return err
	}
	b.write(entry{key: string(key), value: append([]byte{}, value...)})
	return nil
}

func (b *bucket) Delete(key []byte) error {
	if err := b.checkKey(key); err != nil {
		return err
	}
	b.write(entry{key: string(key), del: true})
	return nil
}

func (b *bucket) checkKey(key []byte) error {
	if err := b.tx.checkWrite(); err != nil {
		return err
	}
	if len(key) == 0 {
		return errNoKey
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("pgstore: key of %d bytes: at most %d", len(key), MaxKeySize)
	}
	return nil
}

func (b *bucket) write(e entry) {
	t := b.tx
	if t.writes == nil {
		t.writes = map[string]*overlay{}
	}
	o := t.writes[b.name]
	if o == nil {
		o = &overlay{m: map[string]entry{}}
		t.writes[b.name] = o
	}
	o.set(e)
}

func (b *bucket) Cursor() store.Cursor {
	c := &cursor{b: b, pageSize: firstPage}
	if o := b.overlay(); o != nil {
		c.ov = o.sorted()
	}
	return c
}

func (b *bucket) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}
