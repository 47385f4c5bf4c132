package leaf

import (
	"bytes"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/refusal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rawCSR mirrors the outer PKCS#10 structure so tests can tamper with it.
type rawCSR struct {
	TBS       asn1.RawValue
	Algorithm pkix.AlgorithmIdentifier
	Signature asn1.BitString
}

func withSignature(t *testing.T, der []byte, sig []byte) []byte {
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
	p256 := ecKey(t, elliptic.P256())
	valid := workloadCSR(t, p256)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	one := func(uris ...string) csrSpec { return csrSpec{uris: uris} }
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
		{"signed by another key", withSignature(t, valid, sigOf(t, workloadCSR(t, ecKey(t, elliptic.P256())))), ReasonBadSignature, "signature"},
		{"no SAN", mustCSR(t, p256, csrSpec{}), ReasonNoURISAN, "no URI SAN"},
		{"two URI SANs", mustCSR(t, p256, one(good, "spiffe://example.org/ns/default/sa/other")), ReasonMultipleSANs, "2 URI SANs"},
		{"DNS SAN", mustCSR(t, p256, csrSpec{uris: []string{good}, dns: []string{"workload.default.svc"}}), ReasonForbiddenSAN, "DNS"},
		{"IP SAN", mustCSR(t, p256, csrSpec{uris: []string{good}, ips: []net.IP{net.IPv4(10, 0, 0, 1)}}), ReasonForbiddenSAN, "IP"},
		{"email SAN", mustCSR(t, p256, csrSpec{uris: []string{good}, emails: []string{"a@example.org"}}), ReasonForbiddenSAN, "e-mail"},
		{"other trust domain", mustCSR(t, p256, one("spiffe://evil.org/ns/default/sa/workload")), ReasonWrongTrustDomain, `"example.org"`},
		{"empty path", mustCSR(t, p256, one("spiffe://example.org")), ReasonEmptyPath, "no path"},
		{"not spiffe scheme", mustCSR(t, p256, one("https://example.org/ns/default/sa/workload")), ReasonInvalidSPIFFEID, "not a valid SPIFFE ID"},
		{"dot segment", mustCSR(t, p256, one("spiffe://example.org/ns/../sa/x")), ReasonInvalidSPIFFEID, "not a valid SPIFFE ID"},
		{"query", mustCSR(t, p256, one("spiffe://example.org/ns/default?x=1")), ReasonInvalidSPIFFEID, "not a valid SPIFFE ID"},
		{"RSA 1024", workloadCSR(t, rsaKey(t, 1024)), ReasonWeakRSAKey, "1024 bits"},
		{"P-224", workloadCSR(t, ecKey(t, elliptic.P224())), ReasonUnsupportedKey, "P-224"},
		{"P-521", workloadCSR(t, ecKey(t, elliptic.P521())), ReasonUnsupportedKey, "P-521"},
		{"Ed25519", workloadCSR(t, edKey), ReasonUnsupportedKey, "Ed25519"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseWorkloadCSR(testTD, tt.der)
			if err == nil {
				t.Fatalf("ParseWorkloadCSR accepted the CSR (ID %v)", csr.ID)
			}
			assertRejected(t, err, tt.reason, tt.msg)
		})
	}
}

// sigOf returns the signature bytes of a CSR.
func sigOf(t *testing.T, der []byte) []byte {
	t.Helper()
	var r rawCSR
	if _, err := asn1.Unmarshal(der, &r); err != nil {
		t.Fatal(err)
	}
	return r.Signature.Bytes
}

func assertRejected(t *testing.T, err error, reason, msg string) {
	t.Helper()
	var e *refusal.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *refusal.Error", err, err)
	}
	if e.Reason != reason {
		t.Errorf("Reason = %q, want %q (error: %v)", e.Reason, reason, err)
	}
	if refusal.ReasonOf(err) != reason {
		t.Errorf("ReasonOf = %q, want %q", refusal.ReasonOf(err), reason)
	}
	if !strings.HasPrefix(err.Error(), "authority: ") || !strings.Contains(err.Error(), msg) {
		t.Errorf("message %q: want prefix %q and to contain %q", err.Error(), "authority: ", msg)
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument || st.Message() != err.Error() {
		t.Errorf("status = %v (ok=%v), want InvalidArgument with the error message", st, ok)
	}
}

func TestParseWorkloadCSRAcceptsSupportedKeys(t *testing.T) {
	for _, tt := range []struct {
		name string
		der  []byte
	}{
		{"P-256", workloadCSR(t, ecKey(t, elliptic.P256()))},
		{"P-384", workloadCSR(t, ecKey(t, elliptic.P384()))},
		{"RSA 2048", workloadCSR(t, rsaKey(t, 2048))},
		{"subject ignored", func() []byte {
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "whatever", Organization: []string{"Acme"}},
				URIs:    workloadURIs(t),
			}, ecKey(t, elliptic.P256()))
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
			if csr.PublicKey == nil || csr.Raw == nil || !bytes.Equal(csr.Raw.Raw, tt.der) {
				t.Errorf("CSR fields not filled: %+v", csr)
			}
		})
	}
}

func workloadURIs(t *testing.T) []*url.URL {
	t.Helper()
	req, err := x509.ParseCertificateRequest(workloadCSR(t, ecKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	return req.URIs
}

func TestParseAgentCSRIgnoresSANsButChecksKeyAndSignature(t *testing.T) {
	p256 := ecKey(t, elliptic.P256())
	withSANs := mustCSR(t, p256, csrSpec{
		uris: []string{"spiffe://evil.org/a", "spiffe://example.org/b"},
		dns:  []string{"node-1"},
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
		{"RSA 1024", ReasonWeakRSAKey, mustCSR(t, rsaKey(t, 1024), csrSpec{})},
		{"P-224", ReasonUnsupportedKey, mustCSR(t, ecKey(t, elliptic.P224()), csrSpec{})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseAgentCSR(tt.der); refusal.ReasonOf(err) != tt.reason {
				t.Fatalf("ParseAgentCSR error %v, want reason %s", err, tt.reason)
			}
		})
	}
}
