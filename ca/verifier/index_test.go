package verifier

import (
	"encoding/json"
	"testing"
)

// TestEntryIndexReadsAsEncodingJSONDoes: whatever an entry's bytes, the
// index the verifier checks is the one encoding/json (and so the ledger's
// own decoder) reads: a second "index" key, in any case or escaped, cannot
// make the verifier see another index than every other reader.
func TestEntryIndexReadsAsEncodingJSONDoes(t *testing.T) {
	for _, entry := range []string{
		`{"v":1,"index":5,"kind":"issuance"}`,
		`{"v":1,"index":5,"kind":"issuance","index":7}`,
		`{"v":1,"index":5,"kind":"issuance","INDEX":7}`,
		`{"v":1,"index":5,"kind":"issuance","Index":7}`,
		`{"v":1,"index":5,"kind":"issuance","\u0069ndex":7}`,
		`{"v":1,"index":5,"reason":"the index","x":1}`,
		`{"v":1,"index":5,"spiffe_id":"spiffe://td/é","index":9}`,
		`{"v":1,"index":05,"kind":"issuance"}`,
		`{"v":1,"index":18446744073709551615,"kind":"x"}`,
		`{"kind":"issuance","index":3}`,
	} {
		var hdr struct {
			Index *uint64 `json:"index"`
		}
		jsonErr := json.Unmarshal([]byte(entry), &hdr)
		got, ok := entryIndex([]byte(entry))
		switch {
		case jsonErr != nil || hdr.Index == nil:
			if ok {
				t.Errorf("%s: verifier reads index %d where encoding/json reads none (%v)", entry, got, jsonErr)
			}
		case !ok || got != *hdr.Index:
			t.Errorf("%s: verifier reads %d (%v), encoding/json reads %d", entry, got, ok, *hdr.Index)
		}
	}
}

// FuzzEntryIndex: on any input the verifier and encoding/json agree.
func FuzzEntryIndex(f *testing.F) {
	f.Add([]byte(`{"v":1,"index":5,"kind":"issuance","index":7}`))
	f.Add([]byte(`{"v":1,"index":12,"kind":"renewal","serial":"ab"}`))
	f.Add([]byte(`{"v":1,"index":5,garbage`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var hdr struct {
			Index *uint64 `json:"index"`
		}
		jsonErr := json.Unmarshal(data, &hdr)
		got, ok := entryIndex(data)
		if jsonErr != nil || hdr.Index == nil {
			if ok {
				t.Fatalf("%q: verifier reads %d, encoding/json none", data, got)
			}
			return
		}
		if !ok || got != *hdr.Index {
			t.Fatalf("%q: verifier reads %d (%v), encoding/json %d", data, got, ok, *hdr.Index)
		}
	})
}
