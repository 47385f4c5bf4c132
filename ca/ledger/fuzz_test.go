package ledger

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

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
	l, err := Open(good, Config{Clock: clocktest.Func(clock.Now)})
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
		if l, err := Open(path, Config{Clock: clocktest.Func(clock.Now)}); err == nil {
			l.Close()
		} else if !strings.HasPrefix(err.Error(), "ledger: ") {
			t.Fatalf("unclear error: %v", err)
		}
		l, err := Open(path, Config{Clock: clocktest.Func(clock.Now), ReadOnly: true})
		if err != nil {
			return
		}
		defer l.Close()
		ctx := context.Background()
		_, _, _ = l.List(ctx, index.Filter{}, 50, "")
		_, _ = l.Get(ctx, "1005")
		_ = l.Export(ctx, 0, func(verifier.Leaf) error { return nil })
		_, _ = l.InclusionProof(3, l.Size())
	})
}
