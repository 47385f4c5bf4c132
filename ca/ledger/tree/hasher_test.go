package tree

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// appendBoth appends leaves to two copies of head, one hashed by
// rfc6962.DefaultHasher and one by h, recording every visited node, and
// fails t unless the two visit the same nodes with the same hashes and
// end with the same range.
func appendBoth(t *testing.T, head Head, h *Hasher, leaves [][]byte) Head {
	t.Helper()
	// Each range its own list: a range appends into the list it was made from.
	ref, err := Head{Size: head.Size, Hashes: slices.Clone(head.Hashes)}.Range()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Head{Size: head.Size, Hashes: slices.Clone(head.Hashes)}.RangeWith(h)
	if err != nil {
		t.Fatal(err)
	}
	var refNodes, gotNodes []string
	record := func(out *[]string) compact.VisitFn {
		return func(id compact.NodeID, hash []byte) {
			*out = append(*out, fmt.Sprintf("%d/%d:%x", id.Level, id.Index, hash))
		}
	}
	for _, data := range leaves {
		want := rfc6962.DefaultHasher.HashLeaf(data)
		leaf := h.Leaf(data)
		if !bytes.Equal(leaf, want) {
			t.Fatalf("Leaf(%q) = %x, want %x", data, leaf, want)
		}
		if err := ref.Append(want, record(&refNodes)); err != nil {
			t.Fatal(err)
		}
		if err := got.Append(leaf, record(&gotNodes)); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(refNodes) != fmt.Sprint(gotNodes) || fmt.Sprintf("%x", ref.Hashes()) != fmt.Sprintf("%x", got.Hashes()) {
		t.Fatalf("nodes %v\nwant %v\nrange %x, want %x", gotNodes, refNodes, got.Hashes(), ref.Hashes())
	}
	return Head{Size: got.End(), Hashes: got.Hashes()}
}

// TestHasherMatchesRFC6962: leaf and inner-node hashes of Hasher equal
// rfc6962.DefaultHasher's over appends of 1 to 300 leaves onto trees of
// many sizes, with a Hasher sized too small (its arena must grow without
// overwriting a hash the range still holds), and the hashes handed out
// earlier are unchanged after later ones.
func TestHasherMatchesRFC6962(t *testing.T) {
	head := Head{}
	h := NewHasher(1)
	var kept [][]byte
	var want []string
	for step := 1; step <= 300; step += 7 {
		leaves := make([][]byte, step)
		for i := range leaves {
			leaves[i] = []byte(fmt.Sprintf("leaf %d of step %d", i, step))
		}
		head = appendBoth(t, head, h, leaves)
		l, r := leaves[0], leaves[len(leaves)-1]
		kept = append(kept, h.Children(l, r))
		want = append(want, fmt.Sprintf("%x", rfc6962.DefaultHasher.HashChildren(l, r)))
	}
	for i := range kept {
		if got := fmt.Sprintf("%x", kept[i]); got != want[i] {
			t.Fatalf("hash %d changed after later hashes: %s, want %s", i, got, want[i])
		}
	}
}

// FuzzHasher holds Hasher equal to rfc6962.DefaultHasher for any leaf
// data and any pair of children (not only 32-byte ones). Run:
//
//	go test -run '^$' -fuzz FuzzHasher -fuzztime 60s ./ca/ledger/tree/
func FuzzHasher(f *testing.F) {
	f.Add([]byte(""), []byte(""), []byte(""), uint8(1))
	f.Add([]byte(`{"v":1}`), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), uint8(5))
	f.Fuzz(func(t *testing.T, data, l, r []byte, n uint8) {
		h := NewHasher(int(n % 4))
		if got, want := h.Leaf(data), rfc6962.DefaultHasher.HashLeaf(data); !bytes.Equal(got, want) {
			t.Fatalf("Leaf(%x) = %x, want %x", data, got, want)
		}
		if got, want := h.Children(l, r), rfc6962.DefaultHasher.HashChildren(l, r); !bytes.Equal(got, want) {
			t.Fatalf("Children(%x, %x) = %x, want %x", l, r, got, want)
		}
		leaves := make([][]byte, int(n)%40+1)
		for i := range leaves {
			leaves[i] = append(bytes.Clone(data), byte(i))
		}
		appendBoth(t, Head{}, h, leaves)
	})
}

// TestRangeLeavesItsHeadUnchanged: appending to a range made from a head
// does not change the head (a compact range merges into the list it was
// made from; the published head is read by checkpoints while a follower
// extends it).
func TestRangeLeavesItsHeadUnchanged(t *testing.T) {
	for size := uint64(1); size <= 9; size++ {
		r, err := Head{}.Range()
		if err != nil {
			t.Fatal(err)
		}
		for i := range size {
			if err := r.Append(rfc6962.DefaultHasher.HashLeaf([]byte{byte(i)}), nil); err != nil {
				t.Fatal(err)
			}
		}
		head := Head{Size: r.End(), Hashes: r.Hashes()}
		want := fmt.Sprintf("%x", head.Hashes)
		for _, mk := range []func() (*compact.Range, error){head.Range, func() (*compact.Range, error) { return head.RangeWith(NewHasher(1)) }} {
			r, err := mk()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := r.Append(rfc6962.DefaultHasher.HashLeaf([]byte{byte(100 + i)}), nil); err != nil {
					t.Fatal(err)
				}
			}
			if got := fmt.Sprintf("%x", head.Hashes); got != want {
				t.Fatalf("head of size %d changed by appends to its range: %s, was %s", size, got, want)
			}
		}
	}
}
