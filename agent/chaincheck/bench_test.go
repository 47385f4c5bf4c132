package chaincheck

import (
	"crypto/x509"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// BenchmarkVerify is one SVID's chain check, by a Checker that has seen
// the intermediate before (every SVID after a rotation's first) and by
// x509svid.Verify.
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	bundle := bundleOf(f.root)
	chain := []*x509.Certificate{newLeaf(b, f.inter, nil), f.inter.cert}
	b.Run("checker", func(b *testing.B) {
		b.ReportAllocs()
		c := &Checker{}
		for b.Loop() {
			if err := c.Verify(chain, bundle, base); err != nil {
				b.Fatal(err)
			}
		}
		if c.full.Load() != 0 {
			b.Fatalf("%d chains fully verified, want none", c.full.Load())
		}
	})
	b.Run("x509svid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(base)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
