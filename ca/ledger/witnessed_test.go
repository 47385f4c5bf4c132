package ledger

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
)

// cosigned appends a stand-in witness line to a checkpoint: the ledger
// stores the lines the caller verified, whatever they are.
func cosigned(cp []byte, tag string) []byte {
	sig := base64.StdEncoding.EncodeToString(make([]byte, 76))
	return append(append([]byte(nil), cp...), []byte("— witness.test/"+tag+" "+sig+"\n")...)
}

func TestWitnessedCheckpointKeepsTheLargest(t *testing.T) {
	ctx := context.Background()
	l, _ := openTest(t, newFakeClock())
	if cp := l.WitnessedCheckpoint(); cp != nil {
		t.Fatalf("new ledger has a witnessed checkpoint: %q", cp)
	}
	fill(t, l, 3, time.Now().Add(time.Hour))
	small, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fillFrom(t, l, 3, 2, time.Now().Add(time.Hour))
	large, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StoreWitnessedCheckpoint(ctx, cosigned(large, "a")); err != nil {
		t.Fatal(err)
	}
	if err := l.StoreWitnessedCheckpoint(ctx, cosigned(small, "a")); err != nil {
		t.Fatal(err)
	}
	if got := string(l.WitnessedCheckpoint()); got != string(cosigned(large, "a")) {
		t.Fatalf("a smaller checkpoint replaced the larger one: %q", got)
	}
	// The same tree with fresher cosignatures replaces it.
	if err := l.StoreWitnessedCheckpoint(ctx, cosigned(large, "b")); err != nil {
		t.Fatal(err)
	}
	if got := string(l.WitnessedCheckpoint()); got != string(cosigned(large, "b")) {
		t.Fatalf("fresh cosignatures of the same tree were not kept: %q", got)
	}
}

func TestWitnessedCheckpointRefusesForeignAndForged(t *testing.T) {
	ctx := context.Background()
	l, _ := openTest(t, newFakeClock())
	fill(t, l, 4, time.Now().Add(time.Hour))
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Another key named like the log signs a checkpoint of another tree.
	skey, _, err := note.GenerateKey(rand.Reader, l.Origin())
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	forged, _ := note.Sign(&note.Note{Text: l.Origin() + "\n4\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, s)
	tampered := []byte(strings.Replace(string(cp), "\n4\n", "\n3\n", 1))
	for name, bad := range map[string][]byte{"forged": forged, "tampered": tampered, "garbage": []byte("x\n\n— y z\n")} {
		err := l.StoreWitnessedCheckpoint(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), "not signed by the log key") {
			t.Errorf("%s: StoreWitnessedCheckpoint = %v, want a refusal naming the log key", name, err)
		}
	}
	if got := l.WitnessedCheckpoint(); got != nil {
		t.Fatalf("a refused checkpoint was stored: %q", got)
	}
}

func TestWitnessedCheckpointSharedByReplicas(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "shared.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := boltstore.New(db)
	key := filepath.Join(dir, "log.key")
	if _, err := logkey.GenerateKeyFile(key, logkey.DefaultOrigin); err != nil {
		t.Fatal(err)
	}
	a, err := New(st, Config{KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(st, Config{KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fill(t, a, 2, time.Now().Add(time.Hour))
	cp, err := a.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.StoreWitnessedCheckpoint(ctx, cosigned(cp, "a")); err != nil {
		t.Fatal(err)
	}
	if got := string(b.WitnessedCheckpoint()); got != string(cosigned(cp, "a")) {
		t.Fatalf("replica b serves %q, want the checkpoint replica a stored", got)
	}
}
