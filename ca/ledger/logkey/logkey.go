// Package logkey is the ledger's log key: the Ed25519 note key that signs
// its checkpoints, kept in a file (mode 0600) that every replica shares,
// never in the store, which records only its verifier key.
package logkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// The log key. Checkpoints are signed with one Ed25519 note key; its
// verifier key (public) is recorded in the store's meta bucket when the
// log is created, and a ledger opened with another key is refused
// (ErrKeyMismatch): two replicas signing with different keys would publish
// checkpoints no auditor could reconcile. The signer key itself is never
// written to the store.

// ErrKeyMismatch: the log key given to Open or New is not the key the log
// was created with.
var ErrKeyMismatch = errors.New("ledger: log key does not match the log")

// DefaultOrigin is the origin of a log whose operator names none.
const DefaultOrigin = "castellan.local/ledger"

// KeygenHint tells an operator how to make a log key file.
const KeygenHint = "create it once with `castellanctl ledger keygen --out FILE` and give the same file (a Kubernetes Secret) to every replica"

// OriginFor is the origin of a new ledger of trust domain td when the
// operator names none: witnesses tell logs apart by origin, so each trust
// domain's log has its own.
func OriginFor(td string) string { return td + "/castellan/ledger" }

// GenerateKey returns a new Ed25519 note signer key named origin (the
// log's origin line) and its verifier key.
func GenerateKey(origin string) (skey, vkey string, err error) {
	if origin == "" {
		origin = DefaultOrigin
	}
	skey, vkey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("ledger: generate log key: %w", err)
	}
	return skey, vkey, nil
}

// GenerateKeyFile writes a new log key for origin into file (mode 0600,
// synced; the file must not exist) and returns its verifier key, which
// auditors pin.
func GenerateKeyFile(file, origin string) (vkey string, err error) {
	skey, vkey, err := GenerateKey(origin)
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("ledger: write log key: %w", err)
	}
	_, err = f.WriteString(skey)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return "", fmt.Errorf("ledger: write log key %s: %w", file, err)
	}
	return vkey, nil
}

// Key is a log key: the checkpoint signer, its verifier and verifier key.
type Key struct {
	Signer   note.Signer
	Verifier note.Verifier
	VKey     string
}

// Load returns the log key of the log named origin: signer and vkey
// (ledger.Config.Signer and VerifierKey), or the key in file, generated
// there if absent and create is set.
func Load(signer note.Signer, vkey, file, origin string, create bool) (Key, error) {
	if (signer == nil) != (vkey == "") {
		return Key{}, errors.New("ledger: ledger.Config.Signer and ledger.Config.VerifierKey must be set together")
	}
	k := Key{Signer: signer, VKey: vkey}
	if signer == nil {
		var err error
		if k.Signer, k.VKey, err = readKeyFile(file, origin, create); err != nil {
			return Key{}, err
		}
	}
	v, err := note.NewVerifier(k.VKey)
	if err != nil {
		return Key{}, fmt.Errorf("ledger: verifier key: %w", err)
	}
	if v.Name() != k.Signer.Name() || v.KeyHash() != k.Signer.KeyHash() {
		return Key{}, errors.New("ledger: ledger.Config.VerifierKey does not match ledger.Config.Signer")
	}
	k.Verifier = v
	return k, nil
}

// readKeyFile loads the signer key from file.
func readKeyFile(file, origin string, create bool) (note.Signer, string, error) {
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist) && create:
		if _, err := GenerateKeyFile(file, origin); err != nil {
			return nil, "", err
		}
		if b, err = os.ReadFile(file); err != nil {
			return nil, "", fmt.Errorf("ledger: read log key: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("ledger: log key file %s does not exist; %s", file, KeygenHint)
	case err != nil:
		return nil, "", fmt.Errorf("ledger: read log key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("ledger: log key %s: %w", file, err)
	}
	if !create && signer.Name() != origin {
		return nil, "", fmt.Errorf("ledger: log key %s is named %q, not after the log's origin %q (auditors check checkpoints against it); generate the key for that origin", file, signer.Name(), origin)
	}
	vkey, err := verifierKeyOf(skey)
	if err != nil {
		return nil, "", fmt.Errorf("ledger: log key %s: %w", file, err)
	}
	return signer, vkey, nil
}

// CheckPresent refuses to generate a new log key for an existing
// ledger file: every checkpoint saved by auditors would stop verifying.
func CheckPresent(path, keyFile string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return nil
	}
	if _, err := os.Stat(keyFile); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ledger: log key %s is missing but the ledger %s exists; restore the key from a backup (a new key would make every saved checkpoint unverifiable)", keyFile, path)
	}
	return nil
}

// Check compares the log's recorded verifier key (nil for a log created
// before keys were recorded) with the replica's, vkey.
func Check(stored []byte, vkey string) error {
	if stored == nil || string(stored) == vkey {
		return nil
	}
	return fmt.Errorf("%w: the log was created with verifier key %q, this replica has %q; give every replica the log's key file (a new key would fork the log's checkpoints)",
		ErrKeyMismatch, stored, vkey)
}

// verifierKeyOf derives the note verifier key from an Ed25519 signer key.
func verifierKeyOf(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 {
		return "", fmt.Errorf("ledger: log key is malformed")
	}
	k, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(k) != 1+ed25519.SeedSize || k[0] != 1 {
		return "", fmt.Errorf("ledger: log key is not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(k[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", fmt.Errorf("ledger: log key: %w", err)
	}
	return vkey, nil
}
