package witness_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/castellan-dev/castellan/ca/witness"
)

// BenchmarkSubmitToOmniwitness measures one witnessing round trip on
// loopback: a checkpoint one entry larger than the last, with its
// consistency proof, cosigned by a real omniwitness (SQLite state) and
// the cosignature verified.
func BenchmarkSubmitToOmniwitness(b *testing.B) {
	key := newLogKey(b, testOrigin)
	lg := newTestLog(b, key, "bench").grow(1000)
	w := startOmniwitness(b, "witness.test/w1", key.vkey)
	c := witness.New(policy(b, 1, w.spec("w1")), witness.ClientConfig{})
	ctx := context.Background()
	for b.Loop() {
		lg.grow(1)
		if _, err := c.Submit(ctx, lg.checkpoint(b), 0, lg.proof); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify measures what an agent or auditor pays to check one
// checkpoint against a 2-of-3 policy with all three cosignatures.
func BenchmarkVerify(b *testing.B) {
	key := newLogKey(b, testOrigin)
	lg := newTestLog(b, key, "bench").grow(1000)
	cp := lg.checkpoint(b)
	text := noteText(b, cp)
	signed := append([]byte(nil), cp...)
	var specs []witnessSpec
	for i := range 3 {
		c := newCosigner(b, fmt.Sprintf("w%d.test/w", i))
		specs = append(specs, witnessSpec{fmt.Sprintf("w%d", i), fmt.Sprintf("https://w%d.test", i), c})
		signed = append(signed, c.line(text, fakeNow)...)
	}
	p := policy(b, 2, specs...)
	for b.Loop() {
		if _, err := p.Verify(signed, testOrigin, lg.verifier, fakeNow); err != nil {
			b.Fatal(err)
		}
	}
}
