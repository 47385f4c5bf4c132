package logentry

import "testing"

// FuzzDecode: any leaf data decodes without panicking, and a decoded
// entry is at the index asked for, of version 1, with a kind.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"index":3,"kind":"join_token_use","time":"2026-01-02T03:04:05Z","node":"n"}`), uint64(3))
	f.Add([]byte(`{"v":1,"index":0,"kind":"issuance","time":"2026-01-02T03:04:05Z","serial":"1","spiffe_id":"spiffe://a/b","cert":"AAAA"}`), uint64(0))
	f.Add([]byte(`{"v":2}`), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, index uint64) {
		e, err := Decode(data, index)
		if err != nil {
			return
		}
		if e.Index != index || e.Kind == "" || e.Time.IsZero() {
			t.Fatalf("Decode(%q, %d) accepted %+v", data, index, e)
		}
	})
}
