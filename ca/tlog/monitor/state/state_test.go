package state

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// FuzzLoad: any state file content loads without panicking, and is
// either accepted as a checkpoint signed by the key or refused as
// ErrDamaged.
func FuzzLoad(f *testing.F) {
	_, vkey, err := note.GenerateKey(rand.Reader, "example.org/log")
	if err != nil {
		f.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"version":1,"checkpoint":"example.org/log\n1\nAAAA\n\n"}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte("\x00"))
	f.Fuzz(func(t *testing.T, content []byte) {
		path := filepath.Join(t.TempDir(), "state")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := Load(path, v, "")
		if err != nil && !errors.Is(err, ErrDamaged) {
			t.Fatalf("refused with %v, not ErrDamaged", err)
		}
		if err == nil && (st == nil || st.Checkpoint.Origin != "example.org/log") {
			t.Fatalf("accepted %q as %+v", content, st)
		}
	})
}
