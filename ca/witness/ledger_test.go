package witness_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/witness"
	"golang.org/x/mod/sumdb/note"
)

// openLedger opens the CA's real ledger on a bbolt file and appends n
// join-token events tagged with tag.
func openLedger(t *testing.T, ctx context.Context, path, tag string, n int) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(path, ledger.Config{Origin: testOrigin})
	if err != nil {
		t.Fatalf("ledger.Open: %v", err)
	}
	for i := range n {
		ev := entry.Event{Kind: entry.KindJoinTokenUse, Node: fmt.Sprintf("%s-node-%d", tag, i)}
		if _, err := l.Append(ctx, ev); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	return l
}

// TestOmniwitnessWitnessesTheLedger: the CA's own ledger, witnessed by a
// real omniwitness: its checkpoints are cosigned as it grows, with the
// ledger's consistency proofs; then the ledger's storage is rewritten
// between two runs (the file replaced by another history under the same
// origin and key) and the rewritten log gets no cosignature.
func TestOmniwitnessWitnessesTheLedger(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openLedger(t, ctx, path, "first-run", 4)
	vkey := l.VerifierKey()
	logV, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	w := startOmniwitness(t, "witness.test/w1", vkey)
	p := policy(t, 1, w.spec("w1"))
	c := witness.New(p, witness.ClientConfig{})
	var witnessed uint64
	for round := range 3 {
		cp, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Submit(ctx, cp, witnessed, l.ConsistencyProof)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		v, err := p.Verify(got, l.Origin(), logV, time.Now())
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		witnessed = v.Checkpoint.Size
		for i := range 3 + round*10 {
			if _, err := l.Append(ctx, entry.Event{Kind: entry.KindJoinTokenUse, Node: fmt.Sprintf("grow-%d-%d", round, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Rewrite the storage: the same key file, a new history that is
	// larger than what the witness cosigned.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	rewritten := openLedger(t, ctx, path, "rewritten", int(witnessed)+5)
	defer rewritten.Close()
	if rewritten.VerifierKey() != vkey {
		t.Fatalf("the rewritten ledger has another key")
	}
	cp, err := rewritten.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := witness.New(p, witness.ClientConfig{}).Submit(ctx, cp, witnessed, rewritten.ConsistencyProof)
	if got != nil || !errors.Is(err, witness.ErrInconsistent) {
		t.Fatalf("rewritten ledger: %v; want ErrInconsistent and no checkpoint", err)
	}
	mustContain(t, err, "w1", "may have forked or been rewritten")
}
