package verifier_test

import (
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/castellan-dev/castellan/ca/verifier"
)

const origin = "cluster.local/castellan/ledger"

// testLog is a log built the way the ledger builds one: versioned JSON
// entries naming their index, RFC 6962 leaf hashes, signed checkpoints.
type testLog struct {
	leaves []verifier.Leaf
	signer note.Signer
	vkey   string
}

func newTestLog(t testing.TB, n int) *testLog {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	l := &testLog{signer: s, vkey: vkey}
	for i := range n {
		data := []byte(fmt.Sprintf(`{"v":1,"index":%d,"kind":"issuance","time":"2026-01-02T03:04:05Z","serial":"%x"}`, i, i+1))
		l.leaves = append(l.leaves, verifier.Leaf{Index: uint64(i), Data: data, Hash: rfc6962.DefaultHasher.HashLeaf(data)})
	}
	return l
}

// checkpoint signs the checkpoint of the first size leaves and opens it.
func (l *testLog) checkpoint(t testing.TB, size int) *log.Checkpoint {
	t.Helper()
	cp, err := verifier.OpenCheckpoint(l.signed(t, size), origin, l.vkey)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func (l *testLog) signed(t testing.TB, size int) []byte {
	t.Helper()
	r := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for _, lf := range l.leaves[:size] {
		if err := r.Append(lf.Hash, nil); err != nil {
			t.Fatal(err)
		}
	}
	root := rfc6962.DefaultHasher.EmptyRoot()
	if size > 0 {
		root, _ = r.GetRootHash(nil)
	}
	text := log.Checkpoint{Origin: origin, Size: uint64(size), Hash: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(text)}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// verify feeds leaves to a Tree checking cps and returns its report.
func verify(leaves []verifier.Leaf, cps ...*log.Checkpoint) verifier.Report {
	v := verifier.NewTree(cps...)
	for _, lf := range leaves {
		v.Add(lf)
	}
	return v.Finish()
}

func wantFindings(t *testing.T, rep verifier.Report, substrs ...string) {
	t.Helper()
	if rep.OK() {
		t.Fatalf("report is clean, want findings %q", substrs)
	}
	all := strings.Join(rep.Findings, "\n")
	for _, s := range substrs {
		if !strings.Contains(all, s) {
			t.Errorf("findings lack %q:\n%s", s, all)
		}
	}
}

func TestTreeOfAnUntouchedLogMatchesItsCheckpoints(t *testing.T) {
	l := newTestLog(t, 37)
	rep := verify(l.leaves, l.checkpoint(t, 37), l.checkpoint(t, 20), l.checkpoint(t, 0))
	if !rep.OK() || rep.Entries != 37 || rep.Pruned != 0 {
		t.Fatalf("untouched log: %+v", rep)
	}
	if want := l.checkpoint(t, 37).Hash; string(rep.Root) != string(want) {
		t.Fatal("recomputed root differs from the signed one")
	}
	if rep := verify(nil, l.checkpoint(t, 0)); !rep.OK() {
		t.Fatalf("empty log against the empty checkpoint: %v", rep.Findings)
	}
}

func TestTreeTrustsStoredHashesOnlyForPrunedEntries(t *testing.T) {
	l := newTestLog(t, 10)
	leaves := append([]verifier.Leaf(nil), l.leaves...)
	for i := 2; i < 6; i++ {
		leaves[i].Data = nil // pruned: only the hash remains
	}
	if rep := verify(leaves, l.checkpoint(t, 10)); !rep.OK() || rep.Pruned != 4 {
		t.Fatalf("pruned log: %+v", rep)
	}
	leaves[3].Hash = make([]byte, 32) // a pruned entry whose hash was replaced
	wantFindings(t, verify(leaves, l.checkpoint(t, 10)), "the first 10 entries do not hash to the root in checkpoint 10")
}

func TestTreeCatchesTampering(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(l []verifier.Leaf) []verifier.Leaf
		wants []string
	}{
		{"flipped byte", func(l []verifier.Leaf) []verifier.Leaf {
			l[4].Data = []byte(strings.Replace(string(l[4].Data), "issuance", "issuancf", 1))
			return l
		}, []string{"entry 4 does not hash to its stored leaf", "do not hash to the root in checkpoint 8"}},
		{"flipped byte, leaf hash rewritten", func(l []verifier.Leaf) []verifier.Leaf {
			l[4].Data = []byte(strings.Replace(string(l[4].Data), "issuance", "issuancf", 1))
			l[4].Hash = rfc6962.DefaultHasher.HashLeaf(l[4].Data)
			return l
		}, []string{"do not hash to the root in checkpoint 8"}},
		{"entries swapped", func(l []verifier.Leaf) []verifier.Leaf {
			l[2].Data, l[3].Data, l[2].Hash, l[3].Hash = l[3].Data, l[2].Data, l[3].Hash, l[2].Hash
			return l
		}, []string{"entry stored at 2 says it is entry 3: entries were moved"}},
		{"not an entry", func(l []verifier.Leaf) []verifier.Leaf {
			l[1].Data, l[1].Hash = []byte("not json"), nil
			return l
		}, []string{"entry 1 is not a valid ledger entry"}},
		{"entry deleted", func(l []verifier.Leaf) []verifier.Leaf {
			return append(l[:5], l[6:]...)
		}, []string{"entry 5 is missing from the file", "do not hash to the root in checkpoint 8"}},
		{"entry emptied", func(l []verifier.Leaf) []verifier.Leaf {
			l[5].Data, l[5].Hash = nil, nil
			return l
		}, []string{"entry 5 is missing from the file"}},
		{"log truncated", func(l []verifier.Leaf) []verifier.Leaf {
			return l[:6]
		}, []string{"checkpoint 8 commits to 8 entries but the log has only 6"}},
		{"out of order", func(l []verifier.Leaf) []verifier.Leaf {
			l[3], l[4] = l[4], l[3]
			return l
		}, []string{"entry 3 is out of order after entry 4; verification stopped"}},
		{"leaf hash of the wrong size", func(l []verifier.Leaf) []verifier.Leaf {
			l[7].Data, l[7].Hash = nil, []byte{1, 2, 3}
			return l
		}, []string{"do not hash to the root in checkpoint 8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t, 8)
			leaves := tc.edit(append([]verifier.Leaf(nil), l.leaves...))
			wantFindings(t, verify(leaves, l.checkpoint(t, 8)), tc.wants...)
		})
	}
}

func TestTreeBoundsItsFindings(t *testing.T) {
	l := newTestLog(t, 300)
	for i := range l.leaves {
		l.leaves[i].Hash = make([]byte, 32)
	}
	rep := verify(l.leaves)
	if rep.ProblemCount != 300 || len(rep.Findings) != 100 {
		t.Fatalf("%d problems, %d findings; want 300 counted and the first 100 listed", rep.ProblemCount, len(rep.Findings))
	}
	// A gap beyond any real log stops instead of filling billions of leaves.
	rep = verify([]verifier.Leaf{{Index: 1 << 40, Data: l.leaves[0].Data}})
	wantFindings(t, rep, "out of order")
}

func TestOpenCheckpointRefusesWhatTheKeyDidNotSign(t *testing.T) {
	l := newTestLog(t, 3)
	other := newTestLog(t, 3)
	signed := l.signed(t, 3)
	if _, err := verifier.OpenCheckpoint(signed, "", l.vkey); err != nil {
		t.Fatalf("the log's own checkpoint with its key and the key's name as origin: %v", err)
	}
	forged := []byte(strings.Replace(string(signed), "\n3\n", "\n2\n", 1))
	for _, tc := range []struct {
		name           string
		signed         []byte
		origin, vkey   string
		wantErrContain string
	}{
		{"another log's key", signed, origin, other.vkey, "checkpoint"},
		{"another origin", signed, "evil.example/log", l.vkey, "checkpoint"},
		{"size edited", forged, origin, l.vkey, "checkpoint"},
		{"not a key", signed, origin, "not-a-key", "log verifier key"},
		{"not a note", []byte("hello"), origin, l.vkey, "checkpoint"},
	} {
		if _, err := verifier.OpenCheckpoint(tc.signed, tc.origin, tc.vkey); err == nil || !strings.Contains(err.Error(), tc.wantErrContain) {
			t.Errorf("%s: %v, want an error about the %s", tc.name, err, tc.wantErrContain)
		}
	}
}
