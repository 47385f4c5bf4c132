package keystore

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// kekSize is the length of a key-encryption key: AES-256.
const kekSize = 32

// KEK seals the private keys the journal holds: AES-256-GCM with a random
// 96-bit nonce per sealing; the additional data binds each ciphertext to the
// authority's ID and to which key it is (signing or root), so a sealed key
// moved to another record, or swapped between the two slots of one record,
// does not open.
type KEK struct {
	aead cipher.AEAD
	id   string // fingerprint, safe to store and log
	path string
}

// ErrKEK is wrapped by every failure to read, or to open a key with, the
// key-encryption key.
var ErrKEK = errors.New("authority: key-encryption key")

// LoadKEK reads the key-encryption key at path. The file holds 32 bytes,
// raw, hex (64 digits) or standard base64 (44 characters), surrounding
// white space ignored. When the file does not exist and create is true (a
// store no other process shares), a new random key is written there, 0600,
// as hex.
func LoadKEK(path string, create bool) (*KEK, error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		return createKEK(path)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s does not exist; replicas sharing a store must all mount the same key file (e.g. a Kubernetes Secret) holding 32 random bytes", ErrKEK, path)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	raw, err := decodeKEK(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKEK, path, err)
	}
	return newKEK(raw, path)
}

func decodeKEK(data []byte) ([]byte, error) {
	if len(data) == kekSize {
		return data, nil
	}
	s := strings.TrimSpace(string(data))
	if b, err := hex.DecodeString(s); err == nil && len(b) == kekSize {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == kekSize {
		return b, nil
	}
	return nil, fmt.Errorf("want 32 bytes (raw, 64 hex digits or base64), found %d bytes that are none of these", len(data))
}

func createKEK(path string) (*KEK, error) {
	raw := make([]byte, kekSize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("%w: generate: %w", ErrKEK, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	if err := writeFileAtomic(path, []byte(hex.EncodeToString(raw)+"\n")); err != nil {
		return nil, fmt.Errorf("%w: write %s: %w", ErrKEK, path, err)
	}
	return newKEK(raw, path)
}

func newKEK(raw []byte, path string) (*KEK, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	fp := sha256.Sum256(append([]byte("castellan authority kek id\x00"), raw...))
	return &KEK{aead: aead, id: hex.EncodeToString(fp[:8]), path: path}, nil
}

// Which key of an authority a sealed blob holds.
const (
	sealSigning = "signing"
	sealRoot    = "root"
)

func sealAAD(authorityID, slot string) []byte {
	return []byte("castellan authority key v1\x00" + authorityID + "\x00" + slot)
}

// seal encrypts plaintext for the authority's slot: nonce || ciphertext.
func (k *KEK) seal(authorityID, slot string, plaintext []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("%w: nonce: %w", ErrKEK, err)
	}
	return k.aead.Seal(nonce, nonce, plaintext, sealAAD(authorityID, slot)), nil
}

// open decrypts what seal returned for the same authority and slot.
// sealedBy is the fingerprint of the KEK the record says sealed it: a
// different one is reported as a wrong key file, a failure with the same
// one as a damaged or tampered record.
func (k *KEK) open(authorityID, slot, sealedBy string, sealed []byte) ([]byte, error) {
	if sealedBy != k.id {
		return nil, fmt.Errorf("%w: the %s key of authority %s was sealed with key-encryption key %s, but %s holds key %s: mount the same key file as the replica that created it",
			ErrKEK, slot, authorityID, sealedBy, k.path, k.id)
	}
	n := k.aead.NonceSize()
	if len(sealed) < n+k.aead.Overhead() {
		return nil, fmt.Errorf("%w: the sealed %s key of authority %s is truncated (%d bytes): the journal is damaged", ErrKEK, slot, authorityID, len(sealed))
	}
	pt, err := k.aead.Open(nil, sealed[:n], sealed[n:], sealAAD(authorityID, slot))
	if err != nil {
		return nil, fmt.Errorf("%w: the sealed %s key of authority %s does not open with key %s from %s: the journal record was altered or damaged: %w",
			ErrKEK, slot, authorityID, k.id, k.path, err)
	}
	return pt, nil
}

// ID is the key's fingerprint, safe to store and log: the journal records
// it beside every key sealed under it.
func (k *KEK) ID() string { return k.id }

// Seal seals ca's signing key and root key (a managed CA holds both) for
// authority id: PKCS #8, sealed to the authority's signing and root slots.
func (k *KEK) Seal(id string, ca *CA) (sealedKey, sealedRootKey []byte, err error) {
	if ca.key == nil || ca.rootKey == nil {
		return nil, nil, errors.New("authority: only a CA holding its signing and root keys can be sealed")
	}
	if sealedKey, err = k.sealKey(id, sealSigning, ca.key); err != nil {
		return nil, nil, err
	}
	if sealedRootKey, err = k.sealKey(id, sealRoot, ca.rootKey); err != nil {
		return nil, nil, err
	}
	return sealedKey, sealedRootKey, nil
}

func (k *KEK) sealKey(id, slot string, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("authority: encode %s key: %w", slot, err)
	}
	defer clear(der)
	return k.seal(id, slot, der)
}

// OpenSigning unseals the signing key of authority id, sealed by the KEK
// with fingerprint sealedBy, checks it against chain[0] and returns a CA
// that signs with it (Chain and Cert set; the caller describes the rest
// with CA.With).
func (k *KEK) OpenSigning(id, sealedBy string, sealed []byte, chain []*x509.Certificate) (*CA, error) {
	key, err := k.openKey(id, sealSigning, sealedBy, sealed, chain[0].PublicKey)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: chain[0], Chain: chain, key: key}, nil
}

// OpenRoot unseals the root key of authority id and checks it against
// root; the CA returned can only issue intermediates (CA.NewIntermediate).
func (k *KEK) OpenRoot(id, sealedBy string, sealed []byte, root *x509.Certificate) (*CA, error) {
	key, err := k.openKey(id, sealRoot, sealedBy, sealed, root.PublicKey)
	if err != nil {
		return nil, err
	}
	return &CA{Root: root, Roots: []*x509.Certificate{root}, rootKey: key}, nil
}

// openKey unseals one key of authority id and checks it against pub.
func (k *KEK) openKey(id, slot, sealedBy string, sealed []byte, pub crypto.PublicKey) (crypto.Signer, error) {
	der, err := k.open(id, slot, sealedBy, sealed)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("authority: the %s key of authority %s does not parse: %w", slot, id, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok || !keyMatches(signer, pub) {
		return nil, fmt.Errorf("authority: the %s key of authority %s does not match its certificate: the journal is damaged", slot, id)
	}
	return signer, nil
}
