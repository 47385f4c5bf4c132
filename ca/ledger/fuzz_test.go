package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/fnv"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
		// The indexer's and follower's decoding: the same, without the
		// certificate.
		noCert, err := decodeEvent(data)
		want := e
		want.CertDER = nil
		if err != nil || !reflect.DeepEqual(noCert, want) {
			t.Fatalf("decodeEvent = %+v, %v; want DecodeEntry's %+v without the certificate", noCert, err, want)
		}
		again, err := encodeEvent(e.Index, &e.Event)
		if err != nil {
			t.Fatal(err)
		}
		// An append's index summary is cut from its encoding.
		if sum, err := encodeSummary(e.Index, &e.Event); err != nil || !bytes.Equal(summaryOf(again), sum) {
			t.Fatalf("summaryOf(%s) = %s, encodeSummary = %s (%v)", again, summaryOf(again), sum, err)
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

// FuzzOpenDamagedLedger damages a real ledger file (bytes written at an
// offset, the meta checksums optionally repaired so the damage reaches
// the pages behind them) and opens it, for issuance and read-only for
// forensics. Neither may panic: a damaged file is an error (ErrDamaged
// naming the file), and forensic reads fail with errors. Run:
//
//	go test -run '^$' -fuzz FuzzOpenDamagedLedger -fuzztime 60s ./ca/ledger/
func FuzzOpenDamagedLedger(f *testing.F) {
	clock := newFakeClock()
	dir := f.TempDir()
	good := filepath.Join(dir, "ledger.db")
	l, err := Open(good, Options{Clock: clock.Now})
	if err != nil {
		f.Fatal(err)
	}
	fill(f, l, 300, clock.Now().Add(time.Hour))
	if _, err := l.Checkpoint(context.Background()); err != nil {
		f.Fatal(err)
	}
	l.Close()
	seed, err := os.ReadFile(good)
	if err != nil {
		f.Fatal(err)
	}
	key, err := os.ReadFile(good + ".key")
	if err != nil {
		f.Fatal(err)
	}
	ps := int(binary.LittleEndian.Uint32(seed[16+8:]))
	f.Add(uint32(len(seed)/2), []byte("garbage garbage garbage"), true)
	f.Add(uint32(3*ps+10), []byte{0xff, 0xff}, true)
	f.Add(uint32(3*ps+8), []byte{0}, false)
	f.Add(uint32(0), []byte{}, false)
	f.Fuzz(func(t *testing.T, off uint32, patch []byte, fixMeta bool) {
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("one input took %s: a damaged file must not make Open loop", d)
			}
		}()
		data := append([]byte(nil), seed...)
		copy(data[int(off%uint32(len(data))):], patch)
		if fixMeta {
			for m := range 2 {
				mb := data[m*ps+16:]
				h := fnv.New64a()
				h.Write(mb[:56])
				binary.LittleEndian.PutUint64(mb[56:], h.Sum64())
			}
		}
		path := filepath.Join(t.TempDir(), "ledger.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".key", key, 0o600); err != nil {
			t.Fatal(err)
		}
		if l, err := Open(path, Options{Clock: clock.Now}); err == nil {
			l.Close()
		} else if !strings.HasPrefix(err.Error(), "ledger: ") {
			t.Fatalf("unclear error: %v", err)
		}
		l, err := Open(path, Options{Clock: clock.Now, ReadOnly: true})
		if err != nil {
			return
		}
		defer l.Close()
		ctx := context.Background()
		_, _, _ = l.List(ctx, Filter{}, 50, "")
		_, _ = l.Get(ctx, "1005")
		_ = l.Export(ctx, 0, func(Leaf) error { return nil })
		_, _ = l.InclusionProof(3, l.Size())
	})
}
