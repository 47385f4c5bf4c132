package ledger

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestReplicaWithAnotherLogKeyIsRefused: the first ledger records its
// verifier key in the store; a replica (or a reopened file) with another
// key is refused with logkey.ErrKeyMismatch (FailedPrecondition), on every
// backend.
func TestReplicaWithAnotherLogKeyIsRefused(t *testing.T) {
	forSharedBackends(t, func(t *testing.T, be backend) {
		dir := t.TempDir()
		dbs := be.stores(t, 2)
		l, err := New(dbs[0], withKeyFile(t, dir, Config{}))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		other := filepath.Join(dir, "other.key")
		if _, err := logkey.GenerateKeyFile(other, logkey.DefaultOrigin); err != nil {
			t.Fatal(err)
		}
		_, err = New(dbs[1], Config{KeyFile: other})
		if !errors.Is(err, logkey.ErrKeyMismatch) || status.Code(Status("server", err)) != codes.FailedPrecondition {
			t.Fatalf("replica with another key: %v, want logkey.ErrKeyMismatch", err)
		}
		if !strings.Contains(err.Error(), l.VerifierKey()) {
			t.Fatalf("the refusal does not name the log's key: %v", err)
		}
	})
	t.Run("bbolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		l, err := Open(path, Config{})
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		other := filepath.Join(t.TempDir(), "other.key")
		if _, err := logkey.GenerateKeyFile(other, logkey.DefaultOrigin); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, Config{KeyFile: other}); !errors.Is(err, logkey.ErrKeyMismatch) {
			t.Fatalf("Open with another key file: %v, want logkey.ErrKeyMismatch", err)
		}
		l, err = Open(path, Config{KeyFile: path + ".key"})
		if err != nil {
			t.Fatalf("Open with the log's own key file given explicitly: %v", err)
		}
		l.Close()
	})
}

// TestNewNeverGeneratesALogKey: New needs a key, says how to make one,
// and never creates a missing key file.
func TestNewNeverGeneratesALogKey(t *testing.T) {
	db := sharedBoltStores(t, 1)[0]
	if _, err := New(db, Config{}); err == nil || !strings.Contains(err.Error(), "castellanctl ledger keygen") {
		t.Fatalf("New without a key: %v, want an error saying how to make one", err)
	}
	missing := filepath.Join(t.TempDir(), "log.key")
	if _, err := New(db, Config{KeyFile: missing}); err == nil || !strings.Contains(err.Error(), "castellanctl ledger keygen") {
		t.Fatalf("New with a missing key file: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("New created the missing key file: %v", err)
	}
	named := filepath.Join(t.TempDir(), "named.key")
	if _, err := logkey.GenerateKeyFile(named, "other.example/log"); err != nil {
		t.Fatal(err)
	}
	if _, err := New(db, Config{KeyFile: named}); err == nil || !strings.Contains(err.Error(), "other.example/log") {
		t.Fatalf("New with a key named after another origin: %v", err)
	}
	if _, err := New(db, Config{KeyFile: "x", ReadOnly: true}); err == nil {
		t.Fatal("New accepted forensic read-only mode, which is for bbolt files")
	}
}

// TestGenerateKeyFile: the key file is owner-only, is never overwritten,
// and its verifier key is the ledger's.
func TestGenerateKeyFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "log.key")
	vkey, err := logkey.GenerateKeyFile(file, "example.org/log")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	before, _ := os.ReadFile(file)
	if _, err := logkey.GenerateKeyFile(file, "example.org/log"); err == nil {
		t.Fatal("logkey.GenerateKeyFile overwrote an existing key")
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Fatal("the existing key file changed")
	}
	l, err := New(sharedBoltStores(t, 1)[0], Config{KeyFile: file, Origin: "example.org/log"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.VerifierKey() != vkey {
		t.Fatalf("ledger verifier key %q, logkey.GenerateKeyFile said %q", l.VerifierKey(), vkey)
	}
}
