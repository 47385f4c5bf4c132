package ledger

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecodeEntry feeds arbitrary bytes (as an exported or hand-edited
// entry would be) to DecodeEntry and the tree verifier: neither may panic,
// and an entry that decodes must re-encode to an entry that decodes the same.
func FuzzDecodeEntry(f *testing.F) {
	ev := certEvent(1, "spiffe://td/ns/a/sa/b", "n", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	ev.Time = time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)
	good, _ := encodeEvent(7, &ev)
	f.Add(good)
	f.Add([]byte(`{"v":1,"index":0,"kind":"revocation","time":"x"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v := NewTreeVerifier()
		v.Add(Leaf{Index: 0, Data: data, Hash: make([]byte, 32)})
		_ = v.Finish()
		e, err := DecodeEntry(data)
		if err != nil {
			return
		}
		again, err := encodeEvent(e.Index, &e.Event)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := DecodeEntry(again)
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if e2.Index != e.Index || e2.Kind != e.Kind || e2.Serial != e.Serial || !bytes.Equal(e2.CertDER, e.CertDER) ||
			!e2.Time.Equal(e.Time) || !e2.NotAfter.Equal(e.NotAfter) {
			t.Fatalf("round trip changed the entry: %+v vs %+v", e.Event, e2.Event)
		}
	})
}
