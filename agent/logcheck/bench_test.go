package logcheck_test

import (
	"context"
	"testing"

	"github.com/castellan-dev/castellan/agent/logcheck"
)

// BenchmarkProve measures one Prove of a batch of 100 new certificates in
// a log of 100,000 entries grown by 100 since the accepted checkpoint:
// policy verification, a consistency proof and 100 inclusion proofs (the
// CA's side is the in-memory test source).
func BenchmarkProve(b *testing.B) {
	skey, vkey := newLogKey(b)
	w1, w2 := newCosigner(b, "w1.test/a"), newCosigner(b, "w2.test/b")
	l := newTestLog(b, skey, vkey, "bench").grow(100_000)
	src := &source{log: l}
	src.serveNow(b, w1, w2)
	c := newChecker(b, policyOf(b, 2, w1, w2), vkey, src, openCache(b, b.TempDir()), nil)
	if err := c.Prove(context.Background(), []logcheck.Cert{{Index: idx(0), DER: l.der(0)}})[0]; err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		first := l.tree.Size()
		l.grow(100)
		src.serveNow(b, w1, w2)
		certs := make([]logcheck.Cert, 100)
		for i := range certs {
			certs[i] = logcheck.Cert{Index: idx(first + uint64(i)), DER: l.der(first + uint64(i))}
		}
		b.StartTimer()
		for _, err := range c.Prove(context.Background(), certs) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
