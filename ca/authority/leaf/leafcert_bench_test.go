package leaf

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
)

// BenchmarkLeafParse compares what Sign does with a leaf it has just
// encoded: x509.ParseCertificate (before) and Certificate (after; the
// sub-benchmark keeps its old name, leafCertificate, for comparison).
func BenchmarkLeafParse(b *testing.B) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := castellanCA(b, now)
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(b, csrtest.ECKey(b, elliptic.P256())))
	if err != nil {
		b.Fatal(err)
	}
	tmpl := ca.template(b, now, ProfileWorkload, csr, csr.ID, time.Hour)
	der, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		b.Fatal(err)
	}
	alg, _ := AlgorithmFor(ca.key)
	b.Run("x509.ParseCertificate", func(b *testing.B) {
		b.ReportAllocs()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer reportCPU(b, threadCPU())
		for range b.N {
			if _, err := x509.ParseCertificate(der); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("leafCertificate", func(b *testing.B) {
		b.ReportAllocs()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer reportCPU(b, threadCPU())
		for range b.N {
			if _, err := Certificate(der, tmpl, ca.cert, csr.PublicKey, alg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLeafCreate measures the leaf encoder (Create: encode the
// TBSCertificate, sign it once with P-256, wrap it) next to what it
// replaces, x509.CreateCertificate over the same template (which also
// verifies its own signature).
func BenchmarkLeafCreate(b *testing.B) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := castellanCA(b, now)
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(b, csrtest.ECKey(b, elliptic.P256())))
	if err != nil {
		b.Fatal(err)
	}
	tmpl := ca.template(b, now, ProfileWorkload, csr, csr.ID, time.Hour)
	b.Run("x509.CreateCertificate", func(b *testing.B) {
		b.ReportAllocs()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer reportCPU(b, threadCPU())
		for range b.N {
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Create", func(b *testing.B) {
		b.ReportAllocs()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer reportCPU(b, threadCPU())
		for range b.N {
			if _, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fixedSigner has the CA's public key and answers every Sign with one
// signature made in advance: BenchmarkLeafEncode measures the encoder
// without the cost of signing.
type fixedSigner struct {
	pub crypto.PublicKey
	sig []byte
}

func (s fixedSigner) Public() crypto.PublicKey { return s.pub }

func (s fixedSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return s.sig, nil }

// BenchmarkLeafEncode measures what Create costs besides the signature:
// the TBSCertificate, the public key and the certificate around them.
func BenchmarkLeafEncode(b *testing.B) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := castellanCA(b, now)
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(b, csrtest.ECKey(b, elliptic.P256())))
	if err != nil {
		b.Fatal(err)
	}
	tmpl := ca.template(b, now, ProfileWorkload, csr, csr.ID, time.Hour)
	digest := sha256.Sum256([]byte("fixed"))
	sig, err := ca.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		b.Fatal(err)
	}
	signer := fixedSigner{pub: ca.key.Public(), sig: sig}
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer reportCPU(b, threadCPU())
	for range b.N {
		if _, err := Create(tmpl, ca.cert, csr.PublicKey, signer); err != nil {
			b.Fatal(err)
		}
	}
}

// threadCPU returns the CPU time the calling thread has used (the
// benchmark locks its goroutine to one; other processes' load does not
// count, which makes the figure usable on a shared machine).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the thread CPU per op since cpu0.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}
