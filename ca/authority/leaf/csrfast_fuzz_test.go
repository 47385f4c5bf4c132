package leaf

import (
	"testing"
)

// FuzzCSRParse holds the fast CSR parser to crypto/x509 on any input: if
// parseFastCSR accepts it, x509.ParseCertificateRequest accepts it too and
// they agree on the public key, the SubjectPublicKeyInfo, the URI SANs, the
// numbers of DNS, IP and e-mail SANs, the signature algorithm, the signed
// bytes and the signature verdict; and ParseWorkloadCSR and ParseAgentCSR
// give the same result (ID and key, or refusal reason and message) with
// the fast parser as with crypto/x509 alone. Seeds: every case of
// TestFastCSRMatchesX509 (requests from x509.CreateCertificateRequest and
// hand-made variants) and the corpus in testdata/fuzz/FuzzCSRParse.
func FuzzCSRParse(f *testing.F) {
	for _, c := range append(fastCSRCases(f), x509OnlyCSRCases(f)...) {
		f.Add(c.der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		compareWithX509(t, der)
		comparePipelines(t, der)
	})
}
