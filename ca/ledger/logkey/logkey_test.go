package logkey

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestLoadRefusesKeysThatDoNotFit: a signer without its verifier key, a
// verifier key of another signer, a missing key file where none may be
// generated, and a key named after another log are refused.
func TestLoadRefusesKeysThatDoNotFit(t *testing.T) {
	dir := t.TempDir()
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.org/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	_, otherVKey, err := note.GenerateKey(rand.Reader, "example.org/log")
	if err != nil {
		t.Fatal(err)
	}
	if k, err := Load(signer, vkey, "", "example.org/log", false); err != nil || k.VKey != vkey || k.Verifier == nil {
		t.Fatalf("Load(signer, its vkey) = %+v, %v", k, err)
	}
	if _, err := Load(signer, "", "", "example.org/log", false); err == nil {
		t.Error("a signer without its verifier key was accepted")
	}
	if _, err := Load(signer, otherVKey, "", "example.org/log", false); err == nil {
		t.Error("another signer's verifier key was accepted")
	}
	missing := filepath.Join(dir, "missing.key")
	if _, err := Load(nil, "", missing, "example.org/log", false); err == nil || !strings.Contains(err.Error(), "keygen") {
		t.Errorf("missing key file without create: %v, want the keygen hint", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Load generated a key it was not allowed to")
	}
	named := filepath.Join(dir, "other.key")
	if _, err := GenerateKeyFile(named, "other.example/log"); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(nil, "", named, "example.org/log", false); err == nil || !strings.Contains(err.Error(), "other.example/log") {
		t.Errorf("key of another log: %v, want a refusal naming it", err)
	}
}

// TestCheckRefusesAnotherKey: the log's recorded verifier key must be the
// replica's (a log recorded without one accepts any).
func TestCheckRefusesAnotherKey(t *testing.T) {
	if err := Check([]byte("a+1+x"), "b+2+y"); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("Check(another key) = %v, want ErrKeyMismatch", err)
	}
	if err := Check(nil, "b+2+y"); err != nil {
		t.Fatalf("Check(none recorded) = %v", err)
	}
	if err := Check([]byte("b+2+y"), "b+2+y"); err != nil {
		t.Fatalf("Check(same key) = %v", err)
	}
}

// TestCheckPresentRefusesANewKeyForAnExistingLedger: a ledger file that
// holds data and has lost its key file must not get a fresh key.
func TestCheckPresentRefusesANewKeyForAnExistingLedger(t *testing.T) {
	dir := t.TempDir()
	path, key := filepath.Join(dir, "l.db"), filepath.Join(dir, "l.db.key")
	if err := CheckPresent(path, key); err != nil {
		t.Fatalf("new ledger: %v", err)
	}
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckPresent(path, key); err == nil || !strings.Contains(err.Error(), "restore the key") {
		t.Fatalf("existing ledger without its key: %v, want a refusal", err)
	}
}
