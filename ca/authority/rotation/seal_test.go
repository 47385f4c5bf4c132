package rotation_test

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/store"
)

// clearForms returns every encoding of key that could betray it in clear:
// PKCS #8 and SEC 1 DER, PEM, base64 of the DER (JSON's []byte encoding)
// and the raw private scalar.
func clearForms(t *testing.T, key crypto.Signer) map[string][]byte {
	t.Helper()
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ec := key.(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := ec.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"pkcs8 DER": p8, "sec1 DER": sec1, "scalar": scalar,
		"pkcs8 PEM":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		"pkcs8 base64": []byte(base64.StdEncoding.EncodeToString(p8)),
		"sec1 base64":  []byte(base64.StdEncoding.EncodeToString(sec1)),
		"scalar hex":   []byte(hex.EncodeToString(scalar)),
	}
}

// allKeys opens the signing and root key of every managed authority with
// the KEK file kekPath, as the sealing format is documented (AES-256-GCM,
// nonce first, additional data "castellan authority key v1", the ID and
// the slot), independently of the key store's code.
func allKeys(t *testing.T, db store.DB, kekPath string) map[string]crypto.Signer {
	t.Helper()
	hexKEK, err := os.ReadFile(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(hexKEK)))
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	open := func(id, slot string, sealed []byte) (crypto.Signer, error) {
		n := aead.NonceSize()
		der, err := aead.Open(nil, sealed[:n], sealed[n:], []byte("castellan authority key v1\x00"+id+"\x00"+slot))
		if err != nil {
			return nil, err
		}
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, err
		}
		return k.(crypto.Signer), nil
	}
	out := map[string]crypto.Signer{}
	err = db.View(ctx, func(tx store.Tx) error {
		recs, err := journal.ReadRecords(tx)
		for _, r := range recs {
			k, err := open(r.ID, "signing", r.SealedKey)
			if err != nil {
				return err
			}
			rk, err := open(r.ID, "root", r.SealedRootKey)
			if err != nil {
				return err
			}
			if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(r.Certs[0].PublicKey) ||
				!rk.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(r.RootCerts[0].PublicKey) {
				t.Errorf("authority %s: an unsealed key does not match its certificate", r.ID)
			}
			out[r.ID+" signing"], out[r.ID+" root"] = k, rk
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTheStoreNeverHoldsAPrivateKeyInClear(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	in, err := a.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Activate(ctx, in.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Prepare(ctx, false); err != nil {
		t.Fatal(err)
	}
	keys := allKeys(t, e.db, e.cfg.DataDir+"/"+authority.KEKName)
	if len(keys) != 6 {
		t.Fatalf("opened %d keys, want 6 (3 authorities x signing and root)", len(keys))
	}
	if !keys[a.Snapshot().ActiveID+" signing"].Public().(*ecdsa.PublicKey).Equal(a.Intermediate().PublicKey) {
		t.Fatal("the sealed signing key is not the one that signs")
	}
	signsAs(t, a, a.Intermediate())
	var values [][]byte
	err = e.db.Bolt().View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				values = append(values, append(append([]byte(nil), k...), v...))
				return nil
			})
		})
	})
	if err != nil || len(values) < 3 {
		t.Fatalf("read the store: %v (%d values)", err, len(values))
	}
	file, err := os.ReadFile(filepath.Join(e.dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	values = append(values, file)
	kek, err := os.ReadFile(e.cfg.DataDir + "/" + authority.KEKName)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range keys {
		for form, b := range clearForms(t, key) {
			for _, v := range values {
				if bytes.Contains(v, b) {
					t.Errorf("the store holds the %s key in clear (%s)", name, form)
				}
			}
		}
	}
	for _, v := range values {
		if bytes.Contains(v, bytes.TrimSpace(kek)) {
			t.Error("the store holds the key-encryption key")
		}
	}
}

// editRecords rewrites the journal's records with fn.
func editRecords(t *testing.T, db store.DB, fn func(recs []*journal.Record)) {
	t.Helper()
	err := db.Update(ctx, func(tx store.Tx) error {
		recs, err := journal.ReadRecords(tx)
		if err != nil {
			return err
		}
		fn(recs)
		for _, r := range recs {
			if err := journal.PutRecord(tx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func wantOpenFails(t *testing.T, e *journalEnv, words ...string) {
	t.Helper()
	a, err := authority.Open(ctx, e.cfg)
	if err == nil {
		t.Fatalf("Open succeeded, signing with %s", a.Snapshot().ActiveID)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestAReplicaWithAnotherKEKFailsAtStart(t *testing.T) {
	e := newJournalEnv(t)
	first := e.open().Snapshot().ActiveID
	other := filepath.Join(e.dir, "other.kek")
	if err := os.WriteFile(other, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfg.KEKFile = other
	_, err := authority.Open(ctx, e.cfg)
	if !errors.Is(err, keystore.ErrKEK) {
		t.Fatalf("Open with another KEK: %v, want ErrKEK", err)
	}
	wantOpenFails(t, e, first, "sealed with key-encryption key", other, "mount the same key file")
	e.cfg.KEKFile = ""
	if got := statesOf(t, e.open()); len(got) != 1 {
		t.Fatalf("the journal holds %d authorities: a wrong KEK must never create a new CA", len(got))
	}
}

func TestTamperedSealedKeysFailAtStart(t *testing.T) {
	cases := map[string]struct {
		edit  func(recs []*journal.Record)
		words []string
	}{
		"flipped ciphertext bit": {func(recs []*journal.Record) { recs[0].SealedKey[20] ^= 1 }, []string{"altered or damaged"}},
		"signing and root swapped": {func(recs []*journal.Record) {
			recs[0].SealedKey, recs[0].SealedRootKey = recs[0].SealedRootKey, recs[0].SealedKey
		}, []string{"altered or damaged"}},
		"key moved from another authority": {func(recs []*journal.Record) { recs[0].SealedKey = recs[1].SealedKey }, []string{"altered or damaged"}},
		"truncated":                        {func(recs []*journal.Record) { recs[0].SealedKey = recs[0].SealedKey[:10] }, []string{"truncated"}},
		"certificate replaced":             {func(recs []*journal.Record) { recs[0].Chain = recs[1].Chain }, []string{"holds the certificate of authority", "altered"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newJournalEnv(t)
			a := e.open()
			if _, err := a.Prepare(ctx, true); err != nil { // under another root
				t.Fatal(err)
			}
			editRecords(t, e.db, tc.edit)
			wantOpenFails(t, e, tc.words...)
		})
	}
}

func TestADamagedJournalRecordFailsAtStart(t *testing.T) {
	e := newJournalEnv(t)
	e.open()
	err := e.db.Update(ctx, func(tx store.Tx) error {
		return tx.Bucket(journal.BucketAuthorities).Put([]byte("0000000000000000"), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	wantOpenFails(t, e, "journal record is damaged")
}

func TestALostKEKFileIsNotRegenerated(t *testing.T) {
	e := newJournalEnv(t)
	e.open()
	path := filepath.Join(e.cfg.DataDir, authority.KEKName)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wantOpenFails(t, e, path, "does not exist", "restore that key file")
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a new KEK was generated over a journal sealed under the lost one")
	}
}

func TestTheKEKFileIsGeneratedOwnerOnlyAndReused(t *testing.T) {
	e := newJournalEnv(t)
	first := e.open().Snapshot().ActiveID
	path := filepath.Join(e.cfg.DataDir, authority.KEKName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("KEK file mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if raw, err := hex.DecodeString(strings.TrimSpace(string(data))); err != nil || len(raw) != 32 {
		t.Fatalf("KEK file holds %q, want 64 hex digits", data)
	}
	if e.open().Snapshot().ActiveID != first {
		t.Fatal("reopening with the generated KEK changed the CA")
	}
}

func TestASharedStoreWithoutKEKFileRefusesToStart(t *testing.T) {
	e := newJournalEnv(t)
	e.cfg.Journal = sharedDB{e.db}
	wantOpenFails(t, e, authority.KEKName, "does not exist", "same key file")
	if _, err := os.Stat(filepath.Join(e.cfg.DataDir, authority.KEKName)); err == nil {
		t.Fatal("a KEK was generated for a shared store: replicas would each seal under their own")
	}
	e.cfg.Journal = e.db
	if got := statesOf(t, e.open()); len(got) != 1 {
		t.Fatalf("the refused start created authorities: %v", got)
	}
}
