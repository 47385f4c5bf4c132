package verifier

import (
	"bytes"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Tree recomputes a log's Merkle tree from its leaves, as an auditor
// does: it re-hashes every entry's data (trusting stored leaf hashes only
// for pruned entries), checks that each entry names its own position, and
// compares the roots at the sizes of the checkpoints it is given. A Tree is
// not safe for concurrent use.
type Tree struct {
	checkpoints []*log.Checkpoint
	r           *compact.Range // nil once verification stopped
	rep         Report
}

// NewTree returns a Tree that checks the log against each checkpoint
// (already signature-checked, e.g. with OpenCheckpoint).
func NewTree(checkpoints ...*log.Checkpoint) *Tree {
	v := &Tree{checkpoints: checkpoints, r: rangeFactory.NewEmptyRange(0)}
	v.checkRoots()
	return v
}

// Add feeds the next leaf; leaves must come in index order from 0. A gap
// is reported (each missing entry counts as a zero leaf, so later roots
// cannot match); a leaf out of order stops the verification.
func (v *Tree) Add(lf Leaf) {
	if v.r == nil {
		return
	}
	if want := v.r.End(); lf.Index < want || lf.Index-want > maxGap {
		v.rep.Addf("entry %d is out of order after entry %d; verification stopped", lf.Index, int64(want)-1)
		v.r = nil
		return
	}
	for v.r.End() < lf.Index {
		v.rep.Addf("entry %d is missing from the file", v.r.End())
		v.appendHash(make([]byte, hashSize))
	}
	v.rep.Entries++
	h := lf.Hash
	switch {
	case lf.Data == nil && lf.Hash == nil:
		v.rep.Addf("entry %d is missing from the file", lf.Index)
	case lf.Data == nil:
		v.rep.Pruned++
	default:
		h = rfc6962.DefaultHasher.HashLeaf(lf.Data)
		v.checkData(lf, h)
	}
	if len(h) != hashSize {
		h = make([]byte, hashSize) // keeps the tree shape; the root will not match
	}
	v.appendHash(h)
}

func (v *Tree) appendHash(h []byte) {
	if err := v.r.Append(h, nil); err != nil {
		v.rep.Addf("entry %d: %v", v.r.End(), err)
		return
	}
	v.checkRoots()
}

// checkData reports entries whose bytes do not match their stored leaf
// hash or their position.
func (v *Tree) checkData(lf Leaf, h []byte) {
	if lf.Hash != nil && !bytes.Equal(h, lf.Hash) {
		v.rep.Addf("entry %d does not hash to its stored leaf (hash %s, stored %s): the entry was altered",
			lf.Index, b64(h), b64(lf.Hash))
	}
	idx, ok := entryIndex(lf.Data)
	switch {
	case !ok:
		v.rep.Addf("entry %d is not a valid ledger entry", lf.Index)
	case idx != lf.Index:
		v.rep.Addf("entry stored at %d says it is entry %d: entries were moved", lf.Index, idx)
	}
}

// root is the root of the leaves added so far.
func (v *Tree) root() []byte {
	if v.r.End() == 0 {
		return rfc6962.DefaultHasher.EmptyRoot()
	}
	root, _ := v.r.GetRootHash(nil)
	return root
}

// checkRoots compares the root with every checkpoint of the current size.
func (v *Tree) checkRoots() {
	size := v.r.End()
	for _, cp := range v.checkpoints {
		if cp.Size != size {
			continue
		}
		if root := v.root(); !bytes.Equal(root, cp.Hash) {
			v.rep.Addf("the first %d entries do not hash to the root in checkpoint %d (recomputed %s, signed %s)",
				size, cp.Size, b64(root), b64(cp.Hash))
		}
	}
}

// Finish returns the report; it flags checkpoints larger than the log.
func (v *Tree) Finish() Report {
	rep := v.rep
	if v.r == nil {
		return rep
	}
	for _, cp := range v.checkpoints {
		if cp.Size > v.r.End() {
			rep.Addf("checkpoint %d commits to %d entries but the log has only %d: entries were removed or the file truncated",
				cp.Size, cp.Size, v.r.End())
		}
	}
	rep.Root = v.root()
	return rep
}
