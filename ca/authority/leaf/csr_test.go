package leaf

import (
	"bytes"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/refusal"
)

// rawCSR mirrors the outer PKCS#10 structure so tests can tamper with it.
type rawCSR struct {
	TBS       asn1.RawValue
	Algorithm pkix.AlgorithmIdentifier
	Signature asn1.BitString
}

func withSignature(t testing.TB, der []byte, sig []byte) []byte {
	t.Helper()
	var r rawCSR
	if _, err := asn1.Unmarshal(der, &r); err != nil {
		t.Fatal(err)
	}
	r.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	out, err := asn1.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func flipLastByte(der []byte) []byte {
	out := bytes.Clone(der)
	out[len(out)-1] ^= 0x01
	return out
}

func TestParseWorkloadCSRRejectsBadInput(t *testing.T) {
	p256 := csrtest.ECKey(t, elliptic.P256())
	valid := csrtest.WorkloadCSR(t, p256)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	one := func(uris ...string) csrtest.Spec { return csrtest.Spec{URIs: uris} }
	good := "spiffe://example.org/ns/default/sa/workload"

	tests := []struct {
		name   string
		der    []byte
		reason string
		msg    string
	}{
		{"empty", nil, ReasonMalformedCSR, "empty"},
		{"garbage", []byte("not a certificate request"), ReasonMalformedCSR, "PKCS#10"},
		{"truncated", valid[:len(valid)/2], ReasonMalformedCSR, "PKCS#10"},
		{"PEM instead of DER", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), ReasonMalformedCSR, "PKCS#10"},
		{"unsigned", withSignature(t, valid, nil), ReasonBadSignature, "signature"},
		{"tampered signature", flipLastByte(valid), ReasonBadSignature, "signature"},
		{"tampered SAN", bytes.Replace(valid, []byte("workload"), []byte("workloae"), 1), ReasonBadSignature, "signature"},
		{"signed by another key", withSignature(t, valid, sigOf(t, csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))), ReasonBadSignature, "signature"},
		{"no SAN", csrtest.CSR(t, p256, csrtest.Spec{}), ReasonNoURISAN, "no URI SAN"},
		{"two URI SANs", csrtest.CSR(t, p256, one(good, "spiffe://example.org/ns/default/sa/other")), ReasonMultipleSANs, "2 URI SANs"},
		{"DNS SAN", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{good}, DNS: []string{"workload.default.svc"}}), ReasonForbiddenSAN, "DNS"},
		{"IP SAN", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{good}, IPs: []net.IP{net.IPv4(10, 0, 0, 1)}}), ReasonForbiddenSAN, "IP"},
		{"email SAN", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{good}, Emails: []string{"a@example.org"}}), ReasonForbiddenSAN, "e-mail"},
		{"other trust domain", csrtest.CSR(t, p256, one("spiffe://evil.org/ns/default/sa/workload")), ReasonWrongTrustDomain, `"example.org"`},
		{"empty path", csrtest.CSR(t, p256, one("spiffe://example.org")), ReasonEmptyPath, "no path"},
		{"not spiffe scheme", csrtest.CSR(t, p256, one("https://example.org/ns/default/sa/workload")), ReasonInvalidSPIFFEID, "not a valid SPIFFE ID"},
		{"dot segment", csrtest.CSR(t, p256, one("spiffe://example.org/ns/../sa/x")), ReasonInvalidSPIFFEID, "not a valid SPIFFE ID"},
		{"query", csrtest.CSR(t, p256, one("spiffe://example.org/ns/default?x=1")), ReasonInvalidSPIFFEID, "not a valid SPIFFE ID"},
		{"RSA 1024", csrtest.WorkloadCSR(t, csrtest.RSAKey(t, 1024)), ReasonWeakRSAKey, "1024 bits"},
		{"P-224", csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P224())), ReasonUnsupportedKey, "P-224"},
		{"P-521", csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P521())), ReasonUnsupportedKey, "P-521"},
		{"Ed25519", csrtest.WorkloadCSR(t, edKey), ReasonUnsupportedKey, "Ed25519"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseWorkloadCSR(testTD, tt.der)
			if err == nil {
				t.Fatalf("ParseWorkloadCSR accepted the CSR (ID %v)", csr.ID)
			}
			csrtest.AssertRejected(t, err, tt.reason, tt.msg)
		})
	}
}

// sigOf returns the signature bytes of a CSR.
func sigOf(t testing.TB, der []byte) []byte {
	t.Helper()
	var r rawCSR
	if _, err := asn1.Unmarshal(der, &r); err != nil {
		t.Fatal(err)
	}
	return r.Signature.Bytes
}

func TestParseWorkloadCSRAcceptsSupportedKeys(t *testing.T) {
	for _, tt := range []struct {
		name string
		der  []byte
	}{
		{"P-256", csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256()))},
		{"P-384", csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P384()))},
		{"RSA 2048", csrtest.WorkloadCSR(t, csrtest.RSAKey(t, 2048))},
		{"subject ignored", func() []byte {
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "whatever", Organization: []string{"Acme"}},
				URIs:    csrtest.WorkloadURIs(t),
			}, csrtest.ECKey(t, elliptic.P256()))
			if err != nil {
				t.Fatal(err)
			}
			return der
		}()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseWorkloadCSR(testTD, tt.der)
			if err != nil {
				t.Fatalf("ParseWorkloadCSR: %v", err)
			}
			if got := csr.ID.String(); got != "spiffe://example.org/ns/default/sa/workload" {
				t.Errorf("ID = %s", got)
			}
			req, err := x509.ParseCertificateRequest(tt.der)
			if err != nil {
				t.Fatal(err)
			}
			if !csrtest.PublicKeyEqual(req.PublicKey, csr.PublicKey) || !bytes.Equal(csr.RawSubjectPublicKeyInfo, req.RawSubjectPublicKeyInfo) {
				t.Errorf("CSR fields not filled: %+v", csr)
			}
		})
	}
}

func TestParseAgentCSRIgnoresSANsButChecksKeyAndSignature(t *testing.T) {
	p256 := csrtest.ECKey(t, elliptic.P256())
	withSANs := csrtest.CSR(t, p256, csrtest.Spec{
		URIs: []string{"spiffe://evil.org/a", "spiffe://example.org/b"},
		DNS:  []string{"node-1"},
	})
	csr, err := ParseAgentCSR(withSANs)
	if err != nil {
		t.Fatalf("ParseAgentCSR: %v", err)
	}
	if !csr.ID.IsZero() {
		t.Errorf("agent CSR ID = %v, want zero", csr.ID)
	}
	if !p256.PublicKey.Equal(csr.PublicKey) {
		t.Error("agent CSR public key is not the signer's key")
	}
	for _, tt := range []struct {
		name, reason string
		der          []byte
	}{
		{"garbage", ReasonMalformedCSR, []byte{0x30, 0x03, 0x02, 0x01, 0x00}},
		{"tampered", ReasonBadSignature, flipLastByte(withSANs)},
		{"RSA 1024", ReasonWeakRSAKey, csrtest.CSR(t, csrtest.RSAKey(t, 1024), csrtest.Spec{})},
		{"P-224", ReasonUnsupportedKey, csrtest.CSR(t, csrtest.ECKey(t, elliptic.P224()), csrtest.Spec{})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseAgentCSR(tt.der); refusal.ReasonOf(err) != tt.reason {
				t.Fatalf("ParseAgentCSR error %v, want reason %s", err, tt.reason)
			}
		})
	}
}
