package pgstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/castellan-dev/castellan/ca/store"
)

var (
	errTxDone   = errors.New("pgstore: transaction used after it ended")
	errNoKey    = errors.New("pgstore: empty key")
	errNoBucket = errors.New("pgstore: empty bucket name")
)

// txn is a store.Tx. An Update's writes live in an overlay until commit;
// reads consult the overlay, then the database. The first failed read is
// kept in err and fails the transaction.
type txn struct {
	ctx      context.Context
	conn     *pgx.Conn
	ks       *keyspace
	snapshot int64 // keyspace version the transaction reads at
	writable bool
	done     bool
	err      error

	created map[string]bool     // buckets created by this Update
	writes  map[string]*overlay // by bucket name
}

func (t *txn) Writable() bool { return t.writable }

// fail records a failed read; later reads return nothing.
func (t *txn) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// usable reports whether reads may still run.
func (t *txn) usable() bool { return !t.done && t.err == nil }

func (t *txn) Bucket(name []byte) store.Bucket {
	if !t.usable() || len(name) == 0 {
		return nil
	}
	key := string(name)
	if t.created[key] || t.ks.knownBucket(key, t.snapshot) {
		return &bucket{tx: t, name: key}
	}
	var exists bool
	if err := t.conn.QueryRow(t.ctx, sqlBucketExists, t.ks.name, name).Scan(&exists); err != nil {
		t.fail(err)
		return nil
	}
	if !exists {
		return nil
	}
	t.ks.sawBucket(key, t.snapshot)
	return &bucket{tx: t, name: key}
}

func (t *txn) CreateBucketIfNotExists(name []byte) (store.Bucket, error) {
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

func (t *txn) checkWrite() error {
	if t.done {
		return errTxDone
	}
	if !t.writable {
		return store.ErrReadOnly
	}
	return nil
}

// empty reports whether the Update wrote nothing.
func (t *txn) empty() bool { return len(t.created) == 0 && len(t.writes) == 0 }

// commit writes the overlay, bumps the keyspace to version, notifies
// the other replicas and commits: one round trip. atCommit tells whether
// err is the answer to the COMMIT itself.
func (t *txn) commit(ctx context.Context, version int64) (atCommit bool, err error) {
	b := &pgx.Batch{}
	if len(t.created) > 0 {
		names := make([][]byte, 0, len(t.created))
		for n := range t.created {
			names = append(names, []byte(n))
		}
		b.Queue(sqlCreateBuckets, t.ks.name, names)
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
		b.Queue(sqlPut, t.ks.name, pb, pk, pv)
	}
	if len(dk) > 0 {
		b.Queue(sqlDelete, t.ks.name, db, dk)
	}
	b.Queue(sqlBump, t.ks.name, version)
	b.Queue(sqlNotify, fmt.Sprintf("%s:%d", t.ks.name, version))
	b.Queue("COMMIT")
	br := t.conn.SendBatch(ctx, b)
	defer br.Close()
	for i := range b.Len() {
		if _, err := br.Exec(); err != nil {
			return i == b.Len()-1, err
		}
	}
	return true, br.Close()
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
	tx   *txn
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
	err := t.conn.QueryRow(t.ctx, sqlGet, t.ks.name, []byte(b.name), key).Scan(&v)
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
