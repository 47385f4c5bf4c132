package tree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
)

// TestParseTreeRejectsDamagedHead: a stored head that is cut short, has a
// partial hash or the wrong number of hashes for its size is reported as
// damage, never used to append or prove.
func TestParseTreeRejectsDamagedHead(t *testing.T) {
	if st, err := parseTree(nil); err != nil || st.Size != 0 {
		t.Fatalf("parseTree(nil) = %+v, %v; want the empty tree", st, err)
	}
	size3 := binary.BigEndian.AppendUint64(nil, 3) // size 3: 2 hashes (2 + 1)
	good := append(bytes.Clone(size3), bytes.Repeat([]byte{1}, 2*HashSize)...)
	if st, err := parseTree(good); err != nil || st.Size != 3 || len(st.Hashes) != 2 {
		t.Fatalf("parseTree(size 3, 2 hashes) = %+v, %v", st, err)
	}
	for name, v := range map[string][]byte{
		"short":        {0, 1},
		"partial hash": append(bytes.Clone(size3), bytes.Repeat([]byte{1}, HashSize+5)...),
		"one hash":     append(bytes.Clone(size3), bytes.Repeat([]byte{1}, HashSize)...),
		"three hashes": append(bytes.Clone(size3), bytes.Repeat([]byte{1}, 3*HashSize)...),
	} {
		if _, err := parseTree(v); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("%s: parseTree = %v, want a damage error", name, err)
		}
	}
}

// TestNodesCompleteDoesNotOverflow: a range whose end wraps around is not
// complete in any tree.
func TestNodesCompleteDoesNotOverflow(t *testing.T) {
	if nodesComplete(0, math.MaxUint64-1, 5, math.MaxUint64) {
		t.Fatal("a wrapping range is complete")
	}
	if !nodesComplete(1, 0, 2, 4) || nodesComplete(1, 0, 3, 4) {
		t.Fatal("level-1 nodes of a 4-leaf tree: want [0, 2) complete and [0, 3) not")
	}
}

// TestBadRequestsAreRefusedBeforeReading: proofs and tiles check their
// arguments before any read (no transaction is needed to refuse them).
func TestBadRequestsAreRefusedBeforeReading(t *testing.T) {
	for name, err := range map[string]error{
		"no nodes":        second(NodeHashes(0, 0, 0)),
		"too many nodes":  second(NodeHashes(0, 0, MaxRangeRead+1)),
		"level 64":        second(NodeHashes(64, 0, 1)),
		"no entries":      second(EntryData(0, 0)),
		"too many":        second(EntryData(0, MaxRangeRead+1)),
		"index past size": second(InclusionProof(5, 5)),
		"shrinking trees": second(ConsistencyProof(6, 5)),
	} {
		if !errors.Is(err, entry.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }
