package journal

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"testing"
	"time"
)

// testCA returns a P-256 CA certificate named cn, self-signed when parent
// is nil, with its key.
func testCA(t testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: now, NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// FuzzJournalRecord feeds damaged journal records to the decoder: it never
// panics, and a record it accepts is whole (a chain, roots, an ID that
// names its signing certificate, a known state and source). The seeds are
// the records of a managed authority and of a plug-in one publishing two
// roots, as PutRecord stores them.
func FuzzJournalRecord(f *testing.F) {
	root, rootKey := testCA(f, "root", nil, nil)
	other, _ := testCA(f, "other root", nil, nil)
	inter, _ := testCA(f, "intermediate", root, rootKey)
	for _, r := range []*Record{
		{Seq: 1, ID: AuthorityID(inter), State: StateActive, Source: SourceManaged, Chain: DERs([]*x509.Certificate{inter}),
			Roots: DERs([]*x509.Certificate{root}), SealedKey: []byte{1, 2, 3}, SealedRootKey: []byte{4}, KEKID: "0011223344556677",
			MaxTTL: Duration(time.Hour), PreparedAt: time.Unix(1, 0), ActivatedAt: time.Unix(2, 0)},
		{Seq: 2, ID: AuthorityID(inter), State: StatePrepared, Source: SourcePlugin, Chain: DERs([]*x509.Certificate{inter}),
			Roots: DERs([]*x509.Certificate{root, other}), MaxTTL: Duration(time.Hour), PreparedAt: time.Unix(1, 0)},
	} {
		v, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := DecodeRecord(v); err != nil {
			f.Fatalf("seed record does not decode: %v", err)
		}
		f.Add(v)
	}
	f.Add([]byte(`{"id":"x","state":"active","source":"managed","chain":[],"roots":[]}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := DecodeRecord(v)
		if err != nil {
			return
		}
		if len(r.Certs) == 0 || len(r.RootCerts) == 0 || AuthorityID(r.Certs[0]) != r.ID || !r.State.Trusted() && r.State != StateRevoked {
			t.Fatalf("accepted an incomplete record: %+v", r)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatal(err)
		}
	})
}
