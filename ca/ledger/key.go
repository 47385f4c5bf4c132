package ledger

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

// keygenHint tells an operator how to make a log key file.
const keygenHint = "create it once with `castellanctl ledger keygen --out FILE` and give the same file (a Kubernetes Secret) to every replica"

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

// loadKey sets the checkpoint signer from opts: Signer and VerifierKey,
// or the key in opts.KeyFile, generated there if absent and create is set.
func (l *Ledger) loadKey(opts Options, create bool) error {
	if (opts.Signer == nil) != (opts.VerifierKey == "") {
		return errors.New("ledger: Options.Signer and Options.VerifierKey must be set together")
	}
	if opts.Signer != nil {
		l.signer, l.vkey = opts.Signer, opts.VerifierKey
	} else if err := l.readKeyFile(opts.KeyFile, create); err != nil {
		return err
	}
	v, err := note.NewVerifier(l.vkey)
	if err != nil {
		return fmt.Errorf("ledger: verifier key: %w", err)
	}
	if v.Name() != l.signer.Name() || v.KeyHash() != l.signer.KeyHash() {
		return errors.New("ledger: Options.VerifierKey does not match Options.Signer")
	}
	l.verifier = v
	return nil
}

// readKeyFile loads the signer key from file.
func (l *Ledger) readKeyFile(file string, create bool) error {
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist) && create:
		if _, err := GenerateKeyFile(file, l.origin); err != nil {
			return err
		}
		if b, err = os.ReadFile(file); err != nil {
			return fmt.Errorf("ledger: read log key: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("ledger: log key file %s does not exist; %s", file, keygenHint)
	case err != nil:
		return fmt.Errorf("ledger: read log key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	if l.signer, err = note.NewSigner(skey); err != nil {
		return fmt.Errorf("ledger: log key %s: %w", file, err)
	}
	if !create && l.signer.Name() != l.origin {
		return fmt.Errorf("ledger: log key %s is named %q, not after the log's origin %q (auditors check checkpoints against it); generate the key for that origin", file, l.signer.Name(), l.origin)
	}
	if l.vkey, err = verifierKeyOf(skey); err != nil {
		return fmt.Errorf("ledger: log key %s: %w", file, err)
	}
	return nil
}

// checkKeyPresent refuses to generate a new log key for an existing
// ledger file: every checkpoint saved by auditors would stop verifying.
func checkKeyPresent(path, keyFile string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return nil
	}
	if _, err := os.Stat(keyFile); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ledger: log key %s is missing but the ledger %s exists; restore the key from a backup (a new key would make every saved checkpoint unverifiable)", keyFile, path)
	}
	return nil
}

// checkVerifierKey compares the log's recorded verifier key (nil for a
// log created before keys were recorded) with the ledger's.
func (l *Ledger) checkVerifierKey(stored []byte) error {
	if stored == nil || string(stored) == l.vkey {
		return nil
	}
	return fmt.Errorf("%w: the log was created with verifier key %q, this replica has %q; give every replica the log's key file (a new key would fork the log's checkpoints)",
		ErrKeyMismatch, stored, l.vkey)
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
