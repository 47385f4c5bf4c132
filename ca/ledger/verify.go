package ledger

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	bolt "go.etcd.io/bbolt"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/boltcheck"
)

// maxProblems bounds the problems a Report lists; Problems counts all.
const maxProblems = 100

// maxGap bounds the run of missing indices a TreeVerifier fills in.
const maxGap = 1 << 24

// Report is the outcome of recomputing a log's tree from its leaves.
type Report struct {
	// Entries is how many leaves were read; Pruned how many had no data.
	Entries, Pruned uint64
	// Root is the root recomputed over all leaves read.
	Root []byte
	// Checkpoint is the size of the stored checkpoint VerifyFile checked
	// against (0 when there was none).
	Checkpoint uint64
	// Findings lists the first problems, in words; ProblemCount counts all.
	Findings     []string
	ProblemCount int
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return r.ProblemCount == 0 }

func (r *Report) addf(format string, args ...any) {
	r.ProblemCount++
	if len(r.Findings) < maxProblems {
		r.Findings = append(r.Findings, fmt.Sprintf(format, args...))
	}
}

// TreeVerifier recomputes a log's Merkle tree from its leaves, as an
// auditor does: it re-hashes every entry's data (trusting stored leaf
// hashes only for pruned entries) and compares the roots at the sizes of
// the checkpoints it is given. It needs no access to the ledger.
type TreeVerifier struct {
	checkpoints []*log.Checkpoint
	r           *compact.Range
	rep         Report
}

// NewTreeVerifier returns a verifier that checks the tree against each
// checkpoint (already signature-checked, e.g. with OpenCheckpoint).
func NewTreeVerifier(checkpoints ...*log.Checkpoint) *TreeVerifier {
	v := &TreeVerifier{checkpoints: checkpoints, r: rangeFactory.NewEmptyRange(0)}
	v.checkRoots()
	return v
}

// Add feeds the next leaf; leaves must come in index order from 0.
func (v *TreeVerifier) Add(lf Leaf) {
	if v.r == nil {
		return
	}
	if want := v.r.End(); lf.Index < want || lf.Index-want > maxGap {
		v.rep.addf("entry %d is out of order after entry %d; verification stopped", lf.Index, want-1)
		v.r = nil
		return
	}
	for v.r.End() < lf.Index { // a gap: each missing entry counts as a zero leaf
		v.rep.addf("entry %d is missing from the file", v.r.End())
		v.appendHash(make([]byte, hashSize))
	}
	v.rep.Entries++
	h := lf.Hash
	switch {
	case lf.Data == nil && lf.Hash == nil:
		v.rep.addf("entry %d is missing from the file", lf.Index)
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

func (v *TreeVerifier) appendHash(h []byte) {
	if err := v.r.Append(h, nil); err != nil {
		v.rep.addf("entry %d: %v", v.r.End(), err)
		return
	}
	v.checkRoots()
}

// checkData reports entries whose bytes do not match their stored leaf
// hash or their position.
func (v *TreeVerifier) checkData(lf Leaf, h []byte) {
	if lf.Hash != nil && !bytes.Equal(h, lf.Hash) {
		v.rep.addf("entry %d does not hash to its stored leaf (hash %s, stored %s): the entry was altered",
			lf.Index, b64(h), b64(lf.Hash))
	}
	idx, ok := entryIndex(lf.Data)
	switch {
	case !ok:
		v.rep.addf("entry %d is not a valid ledger entry", lf.Index)
	case idx != lf.Index:
		v.rep.addf("entry stored at %d says it is entry %d: entries were moved", lf.Index, idx)
	}
}

// entryIndex reads the index an encoded entry names. Entries start with
// {"v":1,"index":N, so the fast path avoids decoding the whole entry.
func entryIndex(data []byte) (uint64, bool) {
	const prefix = `{"v":1,"index":`
	if rest, ok := bytes.CutPrefix(data, []byte(prefix)); ok {
		if end := bytes.IndexByte(rest, ','); end > 0 {
			if n, err := strconv.ParseUint(string(rest[:end]), 10, 64); err == nil {
				return n, true
			}
		}
	}
	var hdr struct {
		Index *uint64 `json:"index"`
	}
	if err := json.Unmarshal(data, &hdr); err != nil || hdr.Index == nil {
		return 0, false
	}
	return *hdr.Index, true
}

// checkRoots compares the root with every checkpoint of the current size.
func (v *TreeVerifier) checkRoots() {
	size := v.r.End()
	for _, cp := range v.checkpoints {
		if cp.Size != size {
			continue
		}
		root := rfc6962.DefaultHasher.EmptyRoot()
		if size > 0 {
			root, _ = v.r.GetRootHash(nil)
		}
		if !bytes.Equal(root, cp.Hash) {
			v.rep.addf("the first %d entries do not hash to the root in checkpoint %d (recomputed %s, signed %s)",
				size, cp.Size, b64(root), b64(cp.Hash))
		}
	}
}

// Finish returns the report; it flags checkpoints larger than the log.
func (v *TreeVerifier) Finish() Report {
	rep := v.rep
	if v.r == nil {
		return rep
	}
	for _, cp := range v.checkpoints {
		if cp.Size > v.r.End() {
			rep.addf("checkpoint %d commits to %d entries but the log has only %d: entries were removed or the file truncated",
				cp.Size, cp.Size, v.r.End())
		}
	}
	if v.r.End() == 0 {
		rep.Root = rfc6962.DefaultHasher.EmptyRoot()
	} else {
		rep.Root, _ = v.r.GetRootHash(nil)
	}
	return rep
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// VerifyFile verifies a ledger file offline: it checks the file's page
// structure, checks the stored checkpoint's signature with vkey, recomputes
// the tree from the stored entries and compares it with the stored
// checkpoint and with any extra checkpoints (e.g. one saved earlier). The
// file is opened read-only; the server holding it must be stopped. A
// damaged file is a Report with a finding, not an error (and never a
// panic); errors are for files that cannot be read at all.
func VerifyFile(path, vkey string, extra ...[]byte) (Report, error) {
	var rep Report
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("ledger: %w", err)
	}
	if err := boltcheck.Check(path); err != nil {
		if !errors.Is(err, boltcheck.ErrDamaged) {
			return rep, fmt.Errorf("ledger: %w", err)
		}
		rep.addf("%v; restore the file from a backup", err)
		return rep, nil
	}
	var db *bolt.DB
	err := boltcheck.Guard(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
		return err
	})
	if err != nil {
		return rep, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	defer db.Close()
	err = boltcheck.Guard(func() error {
		return boltstore.New(db).View(context.Background(), func(tx store.Tx) error {
			meta := tx.Bucket(bMeta)
			if meta == nil || tx.Bucket(bEntries) == nil || tx.Bucket(bNodes) == nil {
				return fmt.Errorf("ledger: %s is not a ledger file", path)
			}
			var cps []*log.Checkpoint
			for _, signed := range append([][]byte{meta.Get(kCheckpoint)}, extra...) {
				if signed == nil {
					continue
				}
				cp, err := OpenCheckpoint(signed, string(meta.Get(kOrigin)), vkey)
				if err != nil {
					return err
				}
				cps = append(cps, cp)
			}
			rep = verifyTx(tx, cps)
			if stored := meta.Get(kCheckpoint); stored == nil {
				rep.addf("the file holds no signed checkpoint; there is nothing to verify the entries against")
			} else {
				rep.Checkpoint = cps[0].Size
			}
			return nil
		})
	})
	if errors.Is(err, boltcheck.ErrDamaged) {
		rep.addf("%s is damaged: %v; restore the file from a backup", path, err)
		return rep, nil
	}
	return rep, err
}

// verifyTx recomputes the tree from the entries stored in tx and checks
// it against cps.
func verifyTx(tx store.Tx, cps []*log.Checkpoint) Report {
	v := NewTreeVerifier(cps...)
	c := bucket(tx, bEntries).Cursor()
	nodes := newSeqReader(bucket(tx, bNodes), 0)
	for k, val := c.First(); k != nil; k, val = c.Next() {
		if len(k) != 8 {
			continue
		}
		lf := Leaf{Index: indexOf(k)}
		if !isPruned(val) {
			lf.Data = val
		}
		lf.Hash = storedLeafHash(nodes.get(lf.Index))
		v.Add(lf)
	}
	return v.Finish()
}
