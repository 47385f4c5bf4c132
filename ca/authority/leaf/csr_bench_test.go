package leaf

import (
	"crypto/elliptic"
	"runtime"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
)

// BenchmarkParseWorkloadCSR measures ParseWorkloadCSR, signature check
// included, on the requests the CA sees most: P-256 and P-384 workload CSRs
// shaped like the agent's (client.NewCSR encodes exactly what
// x509.CreateCertificateRequest does for them).
func BenchmarkParseWorkloadCSR(b *testing.B) {
	for _, c := range []struct {
		name  string
		curve elliptic.Curve
	}{{"p256", elliptic.P256()}, {"p384", elliptic.P384()}} {
		der := csrtest.WorkloadCSR(b, csrtest.ECKey(b, c.curve))
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			defer reportCPU(b, threadCPU())
			for range b.N {
				if _, err := ParseWorkloadCSR(testTD, der); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
