package monitor

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// FuzzDecodeEntry: any leaf data decodes without panicking, and a decoded
// entry is at the index asked for, of version 1, with a kind.
func FuzzDecodeEntry(f *testing.F) {
	f.Add([]byte(`{"v":1,"index":3,"kind":"join_token_use","time":"2026-01-02T03:04:05Z","node":"n"}`), uint64(3))
	f.Add([]byte(`{"v":1,"index":0,"kind":"issuance","time":"2026-01-02T03:04:05Z","serial":"1","spiffe_id":"spiffe://a/b","cert":"AAAA"}`), uint64(0))
	f.Add([]byte(`{"v":2}`), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, index uint64) {
		e, err := DecodeEntry(data, index)
		if err != nil {
			return
		}
		if e.Index != index || e.Kind == "" || e.Time.IsZero() {
			t.Fatalf("DecodeEntry(%q, %d) accepted %+v", data, index, e)
		}
	})
}

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

// FuzzLoadState: any state file content loads without panicking, and is
// either accepted as a checkpoint signed by the key or refused as
// ErrState.
func FuzzLoadState(f *testing.F) {
	_, vkey, err := note.GenerateKey(rand.Reader, "example.org/log")
	if err != nil {
		f.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"version":1,"checkpoint":"example.org/log\n1\nAAAA\n\n"}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte("\x00"))
	f.Fuzz(func(t *testing.T, content []byte) {
		path := filepath.Join(t.TempDir(), "state")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := LoadState(path, v, "")
		if err != nil && !errors.Is(err, ErrState) {
			t.Fatalf("refused with %v, not ErrState", err)
		}
		if err == nil && (st == nil || st.Checkpoint.Origin != "example.org/log") {
			t.Fatalf("accepted %q as %+v", content, st)
		}
	})
}
