package verifier_test

import (
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/castellan-dev/castellan/ca/verifier"
)

// FuzzTreeCatchesAnyAlteredByte builds an honest log of n entries from
// the fuzzer's payload and checks, against its signed checkpoint: the
// honest log verifies; any one byte of any entry changed is found,
// whether or not the stored leaf hash was rewritten to match; and the
// report stays within its bounds. Run:
//
//	go test -run '^$' -fuzz FuzzTreeCatchesAnyAlteredByte -fuzztime 60s ./ca/verifier/
func FuzzTreeCatchesAnyAlteredByte(f *testing.F) {
	f.Add([]byte("payload"), uint8(5), uint16(3), uint8(1), false)
	f.Add([]byte{}, uint8(1), uint16(0), uint8(0), true)
	f.Add([]byte("\x00\xff{\"index\":9}"), uint8(33), uint16(500), uint8(0x20), true)
	key := newTestLog(f, 0)
	f.Fuzz(func(t *testing.T, payload []byte, n uint8, at uint16, xor uint8, rehash bool) {
		count := int(n)%40 + 1
		l := &testLog{signer: key.signer, vkey: key.vkey}
		for i := range count {
			data := []byte(fmt.Sprintf(`{"v":1,"index":%d,"kind":"issuance","reason":%q}`, i,
				base64.StdEncoding.EncodeToString(append(payload, byte(i)))))
			l.leaves = append(l.leaves, verifier.Leaf{Index: uint64(i), Data: data, Hash: rfc6962.DefaultHasher.HashLeaf(data)})
		}
		cp := l.checkpoint(t, count)
		if rep := verify(l.leaves, cp); !rep.OK() || rep.Entries != uint64(count) {
			t.Fatalf("honest log of %d entries: %+v", count, rep)
		}
		if xor == 0 {
			return
		}
		victim := int(at) % count
		lf := &l.leaves[victim]
		data := append([]byte(nil), lf.Data...)
		data[int(at)%len(data)] ^= xor
		lf.Data = data
		if rehash {
			lf.Hash = rfc6962.DefaultHasher.HashLeaf(data)
		}
		rep := verify(l.leaves, cp)
		if rep.OK() {
			t.Fatalf("byte %d of entry %d changed (leaf hash rewritten: %v) and the log still verifies", int(at)%len(data), victim, rehash)
		}
		if len(rep.Findings) > rep.ProblemCount || len(rep.Findings) > 100 {
			t.Fatalf("report out of bounds: %d findings, %d problems", len(rep.Findings), rep.ProblemCount)
		}
	})
}
