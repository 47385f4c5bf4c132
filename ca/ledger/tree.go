package ledger

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// hashSize is the size of an RFC 6962 (SHA-256) hash.
const hashSize = 32

// rangeFactory builds compact ranges with RFC 6962 node hashing.
var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// treeState is the compact range [0, size): the roots of the perfect
// subtrees that make up the tree, enough to append and to compute the root.
type treeState struct {
	size   uint64
	hashes [][]byte
}

func (s treeState) rng() (*compact.Range, error) {
	r, err := rangeFactory.NewRange(0, s.size, s.hashes)
	if err != nil {
		return nil, fmt.Errorf("ledger: stored tree state is corrupt: %w", err)
	}
	return r, nil
}

// root returns the tree's root hash (the hash of the empty string for an
// empty tree, as RFC 6962 defines).
func (s treeState) root() ([]byte, error) {
	if s.size == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	r, err := s.rng()
	if err != nil {
		return nil, err
	}
	return r.GetRootHash(nil)
}

func readTree(tx store.Tx) (treeState, error) {
	return parseTree(bucket(tx, bMeta).Get(kTree))
}

// readTreeAndIndexed reads the tree state and the index position with one
// cursor over the meta bucket, where kIndexed < kOrigin < kTree: on
// PostgreSQL one round trip instead of two, in every append.
func readTreeAndIndexed(tx store.Tx) (treeState, uint64, error) {
	var tree []byte
	indexed := uint64(0)
	c := bucket(tx, bMeta).Cursor()
	for k, v := c.Seek(kIndexed); k != nil && bytes.Compare(k, kTree) <= 0; k, v = c.Next() {
		switch {
		case bytes.Equal(k, kIndexed) && len(v) == 8:
			indexed = binary.BigEndian.Uint64(v)
		case bytes.Equal(k, kTree):
			tree = v
		}
	}
	st, err := parseTree(tree)
	return st, indexed, err
}

// parseTree decodes the stored tree state v (nil: the empty tree).
func parseTree(v []byte) (treeState, error) {
	if v == nil {
		return treeState{}, nil
	}
	if len(v) < 8 || (len(v)-8)%hashSize != 0 {
		return treeState{}, fmt.Errorf("ledger: stored tree state has %d bytes; the file is damaged", len(v))
	}
	st := treeState{size: binary.BigEndian.Uint64(v)}
	for p := v[8:]; len(p) > 0; p = p[hashSize:] {
		st.hashes = append(st.hashes, append([]byte(nil), p[:hashSize]...))
	}
	if len(st.hashes) != compact.RangeSize(0, st.size) {
		return treeState{}, fmt.Errorf("ledger: stored tree state for size %d has %d hashes; the file is damaged", st.size, len(st.hashes))
	}
	return st, nil
}

func writeTree(tx store.Tx, r *compact.Range) error {
	v := make([]byte, 8, 8+hashSize*len(r.Hashes()))
	binary.BigEndian.PutUint64(v, r.End())
	for _, h := range r.Hashes() {
		v = append(v, h...)
	}
	return bucket(tx, bMeta).Put(kTree, v)
}

func u64(i uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], i)
	return b[:]
}

// nodeWriter stores every completed subtree hash. Appending leaf i
// completes the leaf (level 0) and every subtree whose last leaf is i, in
// increasing level; they are stored together under key i in the nodes
// bucket, so the bucket is written in key order, one record per leaf. The
// node (level k, index j) is therefore hash k of record (j+1)*2^k - 1.
type nodeWriter struct {
	nodes store.Bucket
	leaf  uint64
	buf   []byte
}

func newNodeWriter(tx store.Tx) *nodeWriter {
	b := bucket(tx, bNodes)
	store.MarkSequential(b)
	return &nodeWriter{nodes: b}
}

func (w *nodeWriter) visit(id compact.NodeID, hash []byte) {
	if id.Level == 0 {
		w.leaf, w.buf = id.Index, w.buf[:0]
	}
	w.buf = append(w.buf, hash...)
}

// flush stores the record of the leaf just appended.
func (w *nodeWriter) flush() error {
	return w.nodes.Put(u64(w.leaf), append([]byte(nil), w.buf...))
}

// seqReader reads the values of increasing index keys (u64) of a bucket
// with one cursor, so that a range costs a few page reads instead of one
// lookup per key (on PostgreSQL, one round trip each).
type seqReader struct {
	c    store.Cursor
	k, v []byte
}

// newSeqReader returns a reader positioned at index from.
func newSeqReader(b store.Bucket, from uint64) *seqReader {
	c := b.Cursor()
	k, v := c.Seek(u64(from))
	return &seqReader{c: c, k: k, v: v}
}

// get returns the value at index i (nil if absent); i must not decrease
// from one call to the next.
func (r *seqReader) get(i uint64) []byte {
	for r.k != nil && (len(r.k) != 8 || indexOf(r.k) < i) {
		r.k, r.v = r.c.Next()
	}
	if r.k != nil && indexOf(r.k) == i {
		return r.v
	}
	return nil
}

// nodeHash reads a stored subtree hash.
func nodeHash(tx store.Tx, id compact.NodeID) ([]byte, error) {
	rec := bucket(tx, bNodes).Get(u64((id.Index+1)<<id.Level - 1))
	if len(rec) < int(id.Level+1)*hashSize {
		return nil, fmt.Errorf("ledger: tree node (level %d, index %d) is missing or damaged", id.Level, id.Index)
	}
	return rec[id.Level*hashSize : (id.Level+1)*hashSize], nil
}

// storedLeafHash returns the leaf hash in a nodes record (nil if damaged).
func storedLeafHash(rec []byte) []byte {
	if len(rec) < hashSize {
		return nil
	}
	return rec[:hashSize]
}

// proofHashes fetches and combines the nodes of an inclusion or consistency
// proof.
func proofHashes(tx store.Tx, n proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(n.IDs))
	for i, id := range n.IDs {
		h, err := nodeHash(tx, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = append([]byte(nil), h...)
	}
	return n.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}

// InclusionProof returns the RFC 6962 inclusion proof of entry index in the
// tree of the given size; it verifies with proof.VerifyInclusion from
// github.com/transparency-dev/merkle. size may be any size up to the
// stored log's (on a shared store, including other replicas' appends).
func (l *Ledger) InclusionProof(index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: no entry %d in a tree of size %d", entry.ErrInvalidArgument, index, size)
	}
	n, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l.proof(n, size, func(logSize uint64) error {
		return fmt.Errorf("%w: no entry %d in a tree of size %d (log size %d)", entry.ErrInvalidArgument, index, size, logSize)
	})
}

// ConsistencyProof returns the RFC 6962 consistency proof between trees of
// size1 and size2 (size1 <= size2 <= stored log size).
func (l *Ledger) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	if size1 > size2 {
		return nil, fmt.Errorf("%w: cannot prove consistency from size %d to %d", entry.ErrInvalidArgument, size1, size2)
	}
	n, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l.proof(n, size2, func(logSize uint64) error {
		return fmt.Errorf("%w: cannot prove consistency from size %d to %d (log size %d)", entry.ErrInvalidArgument, size1, size2, logSize)
	})
}

// proof reads the nodes of a proof about a tree of size, which must not
// exceed the stored log (else tooBig's error).
func (l *Ledger) proof(n proof.Nodes, size uint64, tooBig func(logSize uint64) error) ([][]byte, error) {
	var out [][]byte
	err := l.view(l.ctx, func(tx store.Tx) error {
		st, err := readTree(tx)
		if err != nil {
			return err
		}
		if size > st.size {
			return tooBig(st.size)
		}
		out, err = proofHashes(tx, n)
		return err
	})
	return out, err
}

// bucket returns the named bucket of tx or, when tx has none, an empty
// bucket that refuses writes. A ledger's buckets exist once it is
// created, so a missing one means the store failed a read (the
// transaction then fails with store.ErrUnavailable, whatever is read
// here) or a damaged file.
func bucket(tx store.Tx, name []byte) store.Bucket {
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
