package authority

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/cloudflare/cfssl/log"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"
)

// benchKeys are the CSR key types the benchmarks sign for.
func benchKeys(b *testing.B) map[string]crypto.Signer {
	return map[string]crypto.Signer{"p256": csrtest.ECKey(b, elliptic.P256()), "rsa2048": csrtest.RSAKey(b, 2048)}
}

// BenchmarkSign measures our full path: ParseWorkloadCSR (parse, key and SAN
// checks, signature) then Sign (template from the cfssl profile, cryptobyte
// encoding, one signature, parse of the leaf).
func BenchmarkSign(b *testing.B) {
	a := newTestAuthority(b, newTestClock())
	for _, name := range []string{"p256", "rsa2048"} {
		der := csrtest.WorkloadCSR(b, benchKeys(b)[name])
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				csr, err := a.ParseWorkloadCSR(der)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := a.Sign(ctx, csr, csr.ID, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBareX509 is the floor: parse the CSR, check its signature and
// x509.CreateCertificate with a minimal SVID template.
func BenchmarkBareX509(b *testing.B) {
	inter, key := benchCA(b)
	for _, name := range []string{"p256", "rsa2048"} {
		der := csrtest.WorkloadCSR(b, benchKeys(b)[name])
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				req, err := x509.ParseCertificateRequest(der)
				if err != nil {
					b.Fatal(err)
				}
				if err := req.CheckSignature(); err != nil {
					b.Fatal(err)
				}
				tmpl := &x509.Certificate{
					SerialNumber:          big.NewInt(1),
					NotBefore:             time.Now(),
					NotAfter:              time.Now().Add(DefaultTTL),
					URIs:                  req.URIs,
					KeyUsage:              x509.KeyUsageDigitalSignature,
					ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
					BasicConstraintsValid: true,
				}
				if _, err := x509.CreateCertificate(rand.Reader, tmpl, inter, req.PublicKey, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCFSSLSigner signs the same CSR with cfssl's local signer and the
// same "workload" profile.
func BenchmarkCFSSLSigner(b *testing.B) {
	prev := log.Level
	log.Level = log.LevelError // cfssl logs every signature at Info
	b.Cleanup(func() { log.Level = prev })
	inter, key := benchCA(b)
	policy, err := leaf.NewPolicy(DefaultTTL)
	if err != nil {
		b.Fatal(err)
	}
	s, err := local.NewSigner(key, inter, signer.DefaultSigAlgo(key), policy)
	if err != nil {
		b.Fatal(err)
	}
	der := csrtest.WorkloadCSR(b, csrtest.ECKey(b, elliptic.P256()))
	req := signer.SignRequest{
		Request: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		Profile: leaf.ProfileWorkload,
	}
	b.Run("p256", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Sign(req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
