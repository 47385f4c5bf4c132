package chaincheck

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// svidPKI signs test chains: an intermediate (self-signed: Parse does
// not verify the chain) and leaves under it.
type svidPKI struct {
	inter    *x509.Certificate
	interKey crypto.Signer
}

func newSVIDPKI(t testing.TB, change func(*x509.Certificate)) *svidPKI {
	t.Helper()
	key := ecKey(t, elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "inter"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	if change != nil {
		change(tmpl)
	}
	return &svidPKI{inter: mustCert(t, tmpl, tmpl, key.Public(), key), interKey: key}
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leaf is an SVID leaf for pub; change edits its template.
func (p *svidPKI) leaf(t testing.TB, pub crypto.PublicKey, change func(*x509.Certificate)) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs:     []*url.URL{spiffeid.RequireFromPath(td, "/ns/default/sa/w").URL()},
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
	}
	if change != nil {
		change(tmpl)
	}
	return mustCert(t, tmpl, p.inter, pub, p.interKey).Raw
}

// svidCase is a chain and a key to turn into an SVID.
type svidCase struct {
	name  string
	chain [][]byte
	key   crypto.Signer
	ok    bool
}

func svidCases(t *testing.T) []svidCase {
	p := newSVIDPKI(t, nil)
	k := ecKey(t, elliptic.P256())
	with := func(change func(*x509.Certificate)) [][]byte {
		return [][]byte{p.leaf(t, k.Public(), change), p.inter.Raw}
	}
	good := with(nil)
	notCA := newSVIDPKI(t, func(c *x509.Certificate) { c.IsCA = false })
	noCertSign := newSVIDPKI(t, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCRLSign })
	k384 := ecKey(t, elliptic.P384())
	k224 := ecKey(t, elliptic.P224())
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return []svidCase{
		{name: "good", chain: good, key: k, ok: true},
		{name: "leaf alone", chain: good[:1], key: k, ok: true},
		{name: "two certificates in one element", chain: [][]byte{append(append([]byte{}, good[0]...), good[1]...)}, key: k, ok: true},
		{name: "empty element", chain: [][]byte{good[0], {}, good[1]}, key: k, ok: true},
		{name: "trailing garbage", chain: [][]byte{good[0], append(append([]byte{}, good[1]...), 0)}, key: k},
		{name: "truncated", chain: [][]byte{good[0][:len(good[0])-1], good[1]}, key: k},
		{name: "garbage", chain: [][]byte{[]byte("not a certificate")}, key: k},
		{name: "nothing", chain: [][]byte{{}}, key: k},
		{name: "another key", chain: good, key: ecKey(t, elliptic.P256())},
		{name: "P-384 key, P-256 leaf", chain: good, key: k384},
		{name: "P-384", chain: [][]byte{p.leaf(t, k384.Public(), nil), p.inter.Raw}, key: k384, ok: true},
		{name: "P-224", chain: [][]byte{p.leaf(t, k224.Public(), nil), p.inter.Raw}, key: k224, ok: true},
		{name: "Ed25519", chain: [][]byte{p.leaf(t, edKey.Public(), nil), p.inter.Raw}, key: edKey, ok: true},
		{name: "RSA", chain: [][]byte{p.leaf(t, rsaKey.Public(), nil), p.inter.Raw}, key: rsaKey, ok: true},
		{name: "RSA key, EC leaf", chain: good, key: rsaKey},
		{name: "leaf is a CA", chain: with(func(c *x509.Certificate) { c.IsCA = true }), key: k},
		{name: "leaf may sign certificates", chain: with(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }), key: k},
		{name: "leaf may sign CRLs", chain: with(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCRLSign }), key: k},
		{name: "leaf may not sign", chain: with(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }), key: k},
		{name: "leaf without key usage", chain: with(func(c *x509.Certificate) { c.KeyUsage = 0 }), key: k},
		{name: "trust domain ID", chain: with(func(c *x509.Certificate) { c.URIs = []*url.URL{td.ID().URL()} }), key: k},
		{name: "two URI SANs", chain: with(func(c *x509.Certificate) { c.URIs = append(c.URIs, c.URIs[0]) }), key: k},
		{name: "no URI SAN", chain: with(func(c *x509.Certificate) { c.URIs = nil; c.DNSNames = []string{"w.example"} }), key: k},
		{name: "URI that is no SPIFFE ID", chain: with(func(c *x509.Certificate) { c.URIs = []*url.URL{{Scheme: "https", Host: "x", Path: "/w"}} }), key: k},
		{name: "intermediate not a CA", chain: [][]byte{good[0], notCA.inter.Raw}, key: k},
		{name: "intermediate may not sign certificates", chain: [][]byte{good[0], noCertSign.inter.Raw}, key: k},
		{name: "leaf twice", chain: [][]byte{good[0], good[0]}, key: k},
		{name: "a key on a curve PKCS #8 cannot name", chain: good, key: unnamedCurve(t)},
	}
}

// unnamedCurve is a key on a copy of P-256's parameters: the same
// numbers, a curve PKCS #8 has no name for.
func unnamedCurve(t *testing.T) *ecdsa.PrivateKey {
	params := *elliptic.P256().Params()
	return ecKey(t, &params)
}

// TestParseIsParseRaw: for every chain and key of the table, Parse
// accepts exactly what x509svid.ParseRaw accepts (through parseRaw),
// with the same SPIFFE ID, certificates and key.
func TestParseIsParseRaw(t *testing.T) {
	for _, tc := range svidCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.chain, tc.key)
			if (err == nil) != tc.ok {
				t.Fatalf("Parse: %v, want accepted=%v", err, tc.ok)
			}
			sameSVID(t, got, err, tc.chain, tc.key)
		})
	}
}

// sameSVID fails t unless Parse's result (got, err) is ParseRaw's
// for chain and key.
func sameSVID(t *testing.T, got *x509svid.SVID, err error, chain [][]byte, key crypto.Signer) {
	t.Helper()
	want, werr := parseRaw(chain, key)
	if (err == nil) != (werr == nil) {
		t.Fatalf("Parse: %v; ParseRaw: %v", err, werr)
	}
	if err != nil {
		return
	}
	if got.ID != want.ID || len(got.Certificates) != len(want.Certificates) {
		t.Fatalf("Parse: %s with %d certificates; ParseRaw: %s with %d", got.ID, len(got.Certificates), want.ID, len(want.Certificates))
	}
	for i := range got.Certificates {
		if !bytes.Equal(got.Certificates[i].Raw, want.Certificates[i].Raw) {
			t.Fatalf("certificate %d differs", i)
		}
	}
	gotKey, _ := x509.MarshalPKCS8PrivateKey(got.PrivateKey)
	wantKey, _ := x509.MarshalPKCS8PrivateKey(want.PrivateKey)
	if len(gotKey) == 0 || !bytes.Equal(gotKey, wantKey) {
		t.Fatal("Parse's key is not ParseRaw's")
	}
}

// FuzzParse: for any two chain elements (seeded with real leaves,
// good and bad, and intermediates) and any PKCS #8 key, Parse accepts
// exactly what x509svid.ParseRaw accepts, with the same result.
func FuzzParse(f *testing.F) {
	p := newSVIDPKI(f, nil)
	k := ecKey(f, elliptic.P256())
	kDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		f.Fatal(err)
	}
	for _, change := range []func(*x509.Certificate){
		nil,
		func(c *x509.Certificate) { c.IsCA = true },
		func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature },
		func(c *x509.Certificate) { c.URIs = append(c.URIs, c.URIs[0]) },
		func(c *x509.Certificate) { c.URIs = []*url.URL{td.ID().URL()} },
	} {
		f.Add(p.leaf(f, k.Public(), change), p.inter.Raw, kDER)
	}
	f.Add(p.leaf(f, k.Public(), nil), []byte{}, kDER)
	f.Fuzz(func(t *testing.T, leaf, inter, keyDER []byte) {
		parsed, err := x509.ParsePKCS8PrivateKey(keyDER)
		if err != nil {
			return
		}
		key, ok := parsed.(crypto.Signer)
		if !ok {
			return
		}
		got, err := Parse([][]byte{leaf, inter}, key)
		sameSVID(t, got, err, [][]byte{leaf, inter}, key)
	})
}
