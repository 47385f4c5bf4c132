package client

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// x509CSRInfo is the CertificationRequestInfo x509.CreateCertificateRequest
// encodes for the request NewCSR makes.
func x509CSRInfo(t testing.TB, key crypto.Signer, id spiffeid.ID) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return req.RawTBSCertificateRequest
}

// checkCSR parses der as the CA does and holds it to what NewCSR promises:
// the signature verifies, the key and URI are the ones asked for, the
// algorithm is x509's, and the signed bytes are x509's to the byte.
func checkCSR(t testing.TB, key crypto.Signer, id spiffeid.ID, der []byte) {
	t.Helper()
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("NewCSR made a CSR x509 cannot parse: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if !req.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Fatal("the CSR carries another public key")
	}
	switch {
	case id.IsZero() && len(req.URIs) != 0:
		t.Fatalf("URIs %v, want none", req.URIs)
	case !id.IsZero() && (len(req.URIs) != 1 || req.URIs[0].String() != id.String()):
		t.Fatalf("URIs %v, want [%s]", req.URIs, id)
	}
	want := x509CSRInfo(t, key, id)
	if !bytes.Equal(req.RawTBSCertificateRequest, want) {
		t.Fatalf("CertificationRequestInfo differs from x509's:\n got %x\nwant %x", req.RawTBSCertificateRequest, want)
	}
	ref, _ := x509.ParseCertificateRequest(mustX509CSR(t, key, id))
	if req.SignatureAlgorithm != ref.SignatureAlgorithm {
		t.Fatalf("signature algorithm %s, x509 picks %s", req.SignatureAlgorithm, ref.SignatureAlgorithm)
	}
}

func mustX509CSR(t testing.TB, key crypto.Signer, id spiffeid.ID) []byte {
	der, err := createCSRWithX509(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCSRMatchesCreateCertificateRequest: for every key the agent may make
// and for requests with and without an ID, NewCSR's request is x509's,
// byte for byte where it is signed, and verifies.
func TestCSRMatchesCreateCertificateRequest(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ids := []spiffeid.ID{
		{},
		spiffeid.RequireFromPath(td, "/ns/default/sa/reviews"),
		spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("a-very-long-trust-domain.example.org"),
			"/ns/"+string(bytes.Repeat([]byte("n"), 200))+"/sa/x"), // lengths past 127 bytes
	}
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			der, err := NewCSR(key, id)
			if err != nil {
				t.Fatal(err)
			}
			checkCSR(t, key, id, der)
		}
	}
}

// TestCSROtherKeysGoThroughX509: keys NewCSR does not encode itself
// still get a valid request (x509's).
func TestCSROtherKeysGoThroughX509(t *testing.T) {
	id := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("cluster.local"), "/w")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []crypto.Signer{rsaKey, p521, edKey} {
		if _, ok := csrAlgorithm(key); ok {
			t.Fatalf("%T is encoded by NewCSR itself", key.Public())
		}
		der, err := NewCSR(key, id)
		if err != nil {
			t.Fatal(err)
		}
		req, err := x509.ParseCertificateRequest(der)
		if err != nil || req.CheckSignature() != nil || len(req.URIs) != 1 || req.URIs[0].String() != id.String() {
			t.Fatalf("%T: CSR %v, signature %v", key.Public(), err, req.CheckSignature())
		}
	}
}

// FuzzCSR: for any path a SPIFFE ID may have, NewCSR's request is x509's.
func FuzzCSR(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{"/w", "/ns/default/sa/default", "/" + string(bytes.Repeat([]byte("a"), 300)), "/a-b_c.d/~x"} {
		f.Add("cluster.local", seed)
	}
	f.Fuzz(func(t *testing.T, td, path string) {
		trust, err := spiffeid.TrustDomainFromString(td)
		if err != nil {
			return
		}
		id, err := spiffeid.FromPath(trust, path)
		if err != nil {
			return
		}
		if _, err := x509.ParseCertificateRequest(mustX509CSR(t, key, id)); err != nil {
			return // x509 cannot read its own request for this ID (e.g. "spiffe://."): nothing to compare
		}
		der, err := NewCSR(key, id)
		if err != nil {
			t.Fatal(err)
		}
		checkCSR(t, key, id, der)
	})
}

// BenchmarkNewCSR is the agent's cost of one request: NewCSR against
// x509.CreateCertificateRequest (which also verifies its own signature).
func BenchmarkNewCSR(b *testing.B) {
	key, err := NewKey()
	if err != nil {
		b.Fatal(err)
	}
	id := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("cluster.local"), "/ns/default/sa/reviews")
	b.Run("ours", func(b *testing.B) {
		for b.Loop() {
			if _, err := NewCSR(key, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x509", func(b *testing.B) {
		for b.Loop() {
			if _, err := createCSRWithX509(key, id); err != nil {
				b.Fatal(err)
			}
		}
	})
}
