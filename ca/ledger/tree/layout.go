package tree

import (
	"encoding/binary"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/transparency-dev/formats/log"
)

// The buckets of the log and the keys of its meta bucket.
var (
	Meta    = []byte("meta")
	Entries = []byte("entries")
	Nodes   = []byte("nodes")

	KeyTree       = []byte("tree")
	KeyCheckpoint = []byte("checkpoint")
	KeyOrigin     = []byte("origin")
	KeyIndexed    = []byte("indexed")
	// kVerifierKey is the log's note verifier key (public), recorded at
	// creation: a replica with another key is refused (package logkey).
	KeyVerifierKey = []byte("verifier_key")
)

// KeyWitnessed is the meta key of the latest witnessed checkpoint: a
// checkpoint of this log with the witnesses' cosignature lines appended.
var KeyWitnessed = []byte("witnessed_checkpoint")

// PrunedMarker is the stored value of a pruned entry.
var PrunedMarker = []byte{0}

// IndexOf returns the log index at the end of an index key.
func IndexOf(key []byte) uint64 { return binary.BigEndian.Uint64(key[len(key)-8:]) }

// AppendLeaves appends the stored leaves [from, to) read from tx.
func AppendLeaves(tx store.Tx, out []verifier.Leaf, from, to uint64) []verifier.Leaf {
	if from >= to {
		return out
	}
	entries, nodes := NewSeqReader(Bucket(tx, Entries), from), NewSeqReader(Bucket(tx, Nodes), from)
	for i := from; i < to; i++ {
		lf := verifier.Leaf{Index: i}
		v := entries.Get(i)
		if v != nil && !IsPruned(v) {
			lf.Data = append([]byte(nil), v...)
		}
		if h := LeafHash(nodes.Get(i)); h != nil {
			lf.Hash = append([]byte(nil), h...)
		}
		if v == nil {
			lf.Hash = nil // missing, not pruned
		}
		out = append(out, lf)
	}
	return out
}

func IsPruned(v []byte) bool { return len(v) == 1 && v[0] == PrunedMarker[0] }

// Verify recomputes the tree from the entries stored in tx and checks
// it against cps.
func Verify(tx store.Tx, cps []*log.Checkpoint) verifier.Report {
	v := verifier.NewTree(cps...)
	c := Bucket(tx, Entries).Cursor()
	nodes := NewSeqReader(Bucket(tx, Nodes), 0)
	for k, val := c.First(); k != nil; k, val = c.Next() {
		if len(k) != 8 {
			continue
		}
		lf := verifier.Leaf{Index: IndexOf(k)}
		if !IsPruned(val) {
			lf.Data = val
		}
		lf.Hash = LeafHash(nodes.Get(lf.Index))
		v.Add(lf)
	}
	return v.Finish()
}
