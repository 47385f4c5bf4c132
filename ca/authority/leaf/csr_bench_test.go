package leaf

import (
	"crypto/elliptic"
	"runtime"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf/csrparse"
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

// BenchmarkCSRParsers compares the two CSR parsers alone (no signature
// check) on a P-256 workload CSR: crypto/x509 (csrparse.ParseX509, the
// only parser before) and csrparse.ParseFast.
func BenchmarkCSRParsers(b *testing.B) {
	der := csrtest.WorkloadCSR(b, csrtest.ECKey(b, elliptic.P256()))
	for _, p := range []struct {
		name  string
		parse func([]byte) bool
	}{
		{"x509", func(der []byte) bool { _, err := csrparse.ParseX509(der); return err == nil }},
		{"fast", func(der []byte) bool { _, ok := csrparse.ParseFast(der); return ok }},
	} {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			defer reportCPU(b, threadCPU())
			for range b.N {
				if !p.parse(der) {
					b.Fatal("parse failed")
				}
			}
		})
	}
}
