package hop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// chain returns a leaf with a SPIFFE ID and the CA certificate that signed it.
func chain(t *testing.T) (leaf, ca *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, caT, caT, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(der)
	id, _ := url.Parse("spiffe://cluster.local/ns/default/sa/bookinfo-details")
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err = x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(0xbeef), URIs: []*url.URL{id},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	return leaf, ca
}

func TestPeerCertNamesTheIssuerByFingerprintAndTheServerReportsIt(t *testing.T) {
	leaf, ca := chain(t)
	sum := sha256.Sum256(ca.Raw)
	want := hex.EncodeToString(sum[:])

	c, err := PeerCert(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, ca}})
	if err != nil || c.Issuer != want || c.Serial != "beef" || c.SPIFFEID != "spiffe://cluster.local/ns/default/sa/bookinfo-details" {
		t.Fatalf("PeerCert = %+v, %v; want serial beef, the SPIFFE ID and issuer %s", c, err, want)
	}
	if c, _ := PeerCert(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); c.Issuer != "" {
		t.Fatalf("a leaf sent alone has issuer %q, want none", c.Issuer)
	}

	// The server side reports the client's issuer; FromResponse reads it
	// back, and the server's own from the connection.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/details/0", nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, ca}}
	ReportClient(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(rec, req)
	resp := rec.Result()
	resp.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, ca}}
	h, err := FromResponse("productpage", "details", resp)
	if err != nil || h.Client.Issuer != want || h.Server.Issuer != want {
		t.Fatalf("FromResponse = %+v, %v; want both issuers %s", h, err, want)
	}
}
