package client

import (
	"crypto"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/procstat"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BenchmarkSVIDFromProto measures turning one signed chain from the CA
// (leaf and intermediate, DER) and the key its CSR was made with into an
// SVID, as every batch result is.
func BenchmarkSVIDFromProto(b *testing.B) {
	ca := catest.New(b, td)
	const n = 100
	protos := make([]*cav1.X509SVID, n)
	keys := make([]crypto.Signer, n)
	for i := range n {
		id := spiffeid.RequireFromPath(td, fmt.Sprintf("/ns/bench/sa/sa-%03d", i))
		s := ca.Issue(b, id, time.Hour)
		p := &cav1.X509SVID{SpiffeId: id.String()}
		for _, c := range s.Certificates {
			p.CertChain = append(p.CertChain, c.Raw)
		}
		protos[i], keys[i] = p, s.PrivateKey
	}
	b.ReportAllocs()
	cpu0, err := procstat.CPU(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if _, err := svidFromProto(protos[i%n], keys[i%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	cpu1, err := procstat.CPU(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/SVID")
}
