package witness_test

import (
	"context"
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
	c := witness.New(policy(b, 1, w.spec("w1")))
	ctx := context.Background()
	for b.Loop() {
		lg.grow(1)
		if _, err := c.Submit(ctx, lg.checkpoint(b), 0, lg.proof); err != nil {
			b.Fatal(err)
		}
	}
}
