// Package tree is the ledger's Merkle tree as stored: the buckets and keys
// of the log (entries, the leaves' data; nodes, every completed subtree
// hash; meta, the tree head, checkpoints and the index position), the
// compact-range head appends extend, the node records proofs and tiles
// are read from, and the recomputation of the tree from stored leaves that
// Open and the offline verifier check against signed checkpoints.
package tree

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// HashSize is the size of an RFC 6962 (SHA-256) hash.
const HashSize = 32

// rangeFactory builds compact ranges with RFC 6962 node hashing.
var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// Head is the compact range [0, size): the roots of the perfect
// subtrees that make up the tree, enough to append and to compute the root.
type Head struct {
	Size   uint64
	Hashes [][]byte
}

// Range returns the head as a compact range, to append to.
func (s Head) Range() (*compact.Range, error) {
	return s.rangeOf(rangeFactory)
}

// rangeOf returns the head as a compact range made by f, on a copy of
// the head's list of hashes: a range merges appended leaves into the list
// it was made from, and a head may be the published one, which others
// read meanwhile (the follower extends it).
func (s Head) rangeOf(f *compact.RangeFactory) (*compact.Range, error) {
	r, err := f.NewRange(0, s.Size, slices.Clone(s.Hashes))
	if err != nil {
		return nil, fmt.Errorf("ledger: stored tree state is corrupt: %w", err)
	}
	return r, nil
}

// Root returns the tree's root hash (the hash of the empty string for an
// empty tree, as RFC 6962 defines).
func (s Head) Root() ([]byte, error) {
	if s.Size == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	r, err := s.Range()
	if err != nil {
		return nil, err
	}
	return r.GetRootHash(nil)
}

// Read reads the tree head stored in tx.
func Read(tx store.Tx) (Head, error) {
	return parseTree(Bucket(tx, Meta).Get(KeyTree))
}

// ReadWithIndexed reads the tree state and the index position with one
// cursor over the meta bucket, where kIndexed < kOrigin < KeyTree: on
// PostgreSQL one round trip instead of two, in every append.
func ReadWithIndexed(tx store.Tx) (Head, uint64, error) {
	var tree []byte
	indexed := uint64(0)
	c := Bucket(tx, Meta).Cursor()
	for k, v := c.Seek(KeyIndexed); k != nil && bytes.Compare(k, KeyTree) <= 0; k, v = c.Next() {
		switch {
		case bytes.Equal(k, KeyIndexed) && len(v) == 8:
			indexed = binary.BigEndian.Uint64(v)
		case bytes.Equal(k, KeyTree):
			tree = v
		}
	}
	st, err := parseTree(tree)
	return st, indexed, err
}

// parseTree decodes the stored tree state v (nil: the empty tree).
func parseTree(v []byte) (Head, error) {
	if v == nil {
		return Head{}, nil
	}
	if len(v) < 8 || (len(v)-8)%HashSize != 0 {
		return Head{}, fmt.Errorf("ledger: stored tree state has %d bytes; the file is damaged", len(v))
	}
	st := Head{Size: binary.BigEndian.Uint64(v)}
	for p := v[8:]; len(p) > 0; p = p[HashSize:] {
		st.Hashes = append(st.Hashes, append([]byte(nil), p[:HashSize]...))
	}
	if len(st.Hashes) != compact.RangeSize(0, st.Size) {
		return Head{}, fmt.Errorf("ledger: stored tree state for size %d has %d hashes; the file is damaged", st.Size, len(st.Hashes))
	}
	return st, nil
}

// Write stores r as the tree head.
func Write(tx store.Tx, r *compact.Range) error {
	v := make([]byte, 8, 8+HashSize*len(r.Hashes()))
	binary.BigEndian.PutUint64(v, r.End())
	for _, h := range r.Hashes() {
		v = append(v, h...)
	}
	return Bucket(tx, Meta).Put(KeyTree, v)
}

// Key is the key of entry (or node record) i: i in 8 bytes, big-endian.
func Key(i uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], i)
	return b[:]
}

// NodeWriter stores every completed subtree hash. Appending leaf i
// completes the leaf (level 0) and every subtree whose last leaf is i, in
// increasing level; they are stored together under key i in the nodes
// bucket, so the bucket is written in key order, one record per leaf. The
// node (level k, index j) is therefore hash k of record (j+1)*2^k - 1.
// The records are laid end to end in buf, each stored as its own slice
// (start marks where the current one begins), so a record is never
// copied and never overwritten.
type NodeWriter struct {
	nodes store.Bucket
	leaf  uint64
	buf   []byte
	start int
}

// NewNodeWriter returns a writer of the nodes bucket of tx, with room
// for the records of about leaves leaves (each holds two hashes on
// average).
func NewNodeWriter(tx store.Tx, leaves int) *NodeWriter {
	b := Bucket(tx, Nodes)
	store.MarkSequential(b)
	return &NodeWriter{nodes: b, buf: make([]byte, 0, 3*HashSize*leaves)}
}

// Visit records a completed node (compact.VisitFn).
func (w *NodeWriter) Visit(id compact.NodeID, hash []byte) {
	if id.Level == 0 {
		w.leaf, w.start = id.Index, len(w.buf)
	}
	w.buf = append(w.buf, hash...)
}

// flush stores the record of the leaf just appended under key (Key of
// the leaf's index, w.leaf).
func (w *NodeWriter) flush(key []byte) error {
	if len(key) != 8 || IndexOf(key) != w.leaf {
		return fmt.Errorf("ledger: node record of leaf %d stored under key %x", w.leaf, key)
	}
	rec := w.buf[w.start:len(w.buf):len(w.buf)]
	w.start = len(w.buf)
	return w.nodes.Put(key, rec)
}

// SeqReader reads the values of increasing index keys (u64) of a bucket
// with one cursor, so that a range costs a few page reads instead of one
// lookup per key (on PostgreSQL, one round trip each).
type SeqReader struct {
	c    store.Cursor
	k, v []byte
}

// NewSeqReader returns a reader positioned at index from.
func NewSeqReader(b store.Bucket, from uint64) *SeqReader {
	c := b.Cursor()
	k, v := c.Seek(Key(from))
	return &SeqReader{c: c, k: k, v: v}
}

// Get returns the value at index i (nil if absent); i must not decrease
// from one call to the next.
func (r *SeqReader) Get(i uint64) []byte {
	for r.k != nil && (len(r.k) != 8 || IndexOf(r.k) < i) {
		r.k, r.v = r.c.Next()
	}
	if r.k != nil && IndexOf(r.k) == i {
		return r.v
	}
	return nil
}

// NodeHash reads a stored subtree hash.
func NodeHash(tx store.Tx, id compact.NodeID) ([]byte, error) {
	rec := Bucket(tx, Nodes).Get(Key((id.Index+1)<<id.Level - 1))
	if len(rec) < int(id.Level+1)*HashSize {
		return nil, fmt.Errorf("ledger: tree node (level %d, index %d) is missing or damaged", id.Level, id.Index)
	}
	return rec[id.Level*HashSize : (id.Level+1)*HashSize], nil
}

// LeafHash returns the leaf hash in a nodes record (nil if damaged).
func LeafHash(rec []byte) []byte {
	if len(rec) < HashSize {
		return nil
	}
	return rec[:HashSize]
}

// ProofHashes fetches and combines the nodes of an inclusion or consistency
// proof.
func ProofHashes(tx store.Tx, n proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(n.IDs))
	for i, id := range n.IDs {
		h, err := NodeHash(tx, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = append([]byte(nil), h...)
	}
	return n.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}

// Bucket returns the named bucket of tx or, when tx has none, an empty
// bucket that refuses writes. A ledger's buckets exist once it is
// created, so a missing one means the store failed a read (the
// transaction then fails with store.ErrUnavailable, whatever is read
// here) or a damaged file.
func Bucket(tx store.Tx, name []byte) store.Bucket {
	if b := tx.Bucket(name); b != nil {
		return b
	}
	return missingBucket(name)
}

// missingBucket stands for a bucket the store did not return.
type missingBucket string

func (missingBucket) Get([]byte) []byte                     { return nil }
func (m missingBucket) Put(_, _ []byte) error               { return m.err() }
func (m missingBucket) Delete([]byte) error                 { return m.err() }
func (missingBucket) Cursor() store.Cursor                  { return noCursor{} }
func (missingBucket) ForEach(func(k, v []byte) error) error { return nil }

func (m missingBucket) err() error {
	return fmt.Errorf("%w: bucket %s cannot be read", entry.ErrDamaged, string(m))
}

// noCursor walks an empty bucket.
type noCursor struct{}

func (noCursor) First() (k, v []byte)      { return nil, nil }
func (noCursor) Seek([]byte) (k, v []byte) { return nil, nil }
func (noCursor) Next() (k, v []byte)       { return nil, nil }
