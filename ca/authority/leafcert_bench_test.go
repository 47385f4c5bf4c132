package authority

import (
	"crypto/elliptic"
	"crypto/x509"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/leaf"
)

// BenchmarkLeafParse compares what Sign does with a leaf it has just
// encoded: x509.ParseCertificate (before) and leafCertificate (after).
func BenchmarkLeafParse(b *testing.B) {
	a := newTestAuthority(b, newTestClock())
	csr, err := a.ParseWorkloadCSR(workloadCSR(b, ecKey(b, elliptic.P256())))
	if err != nil {
		b.Fatal(err)
	}
	tmpl, err := a.leafTemplate(leaf.ProfileWorkload, csr, csr.ID, 0)
	if err != nil {
		b.Fatal(err)
	}
	ca := a.keys()
	der, err := leaf.Create(tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		b.Fatal(err)
	}
	alg, _ := leaf.AlgorithmFor(ca.key)
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
			if _, err := leaf.Certificate(der, tmpl, ca.cert, csr.PublicKey, alg); err != nil {
				b.Fatal(err)
			}
		}
	})
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
