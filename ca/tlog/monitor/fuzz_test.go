package monitor

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzParseBundle: any body parses without panicking, into exactly w
// entries that re-encode to the body, or is refused as ErrInvalid.
func FuzzParseBundle(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0, 0}, 2)
	f.Add([]byte{0, 5, 'a'}, 1)
	f.Add([]byte{}, 1)
	f.Fuzz(func(t *testing.T, body []byte, w int) {
		if w < 1 || w > 256 {
			return
		}
		es, err := parseBundle(body, w, 0, "tile/entries/000")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refused with %v, not ErrInvalid", err)
			}
			return
		}
		var again []byte
		for _, e := range es {
			again = binary.BigEndian.AppendUint16(again, uint16(len(e)))
			again = append(again, e...)
		}
		if len(es) != w || string(again) != string(body) {
			t.Fatalf("parsed %d entries of %d that re-encode to %q, not %q", len(es), w, again, body)
		}
	})
}
