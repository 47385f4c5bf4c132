package cache

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// FuzzOpenDamagedFile damages a real cache file (bytes written at an
// offset, the meta checksums optionally repaired so the damage reaches the
// pages behind them) and opens it. Open must never panic: it either opens
// the file, and Load then works, or moves it aside and starts empty. Run:
//
//	go test -run '^$' -fuzz FuzzOpenDamagedFile -fuzztime 60s ./agent/cache/
func FuzzOpenDamagedFile(f *testing.F) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ca := catest.New(f, td, catest.Config{Clock: clock.Frozen(now)})
	dir := f.TempDir()
	good := filepath.Join(dir, "good.db")
	c, err := Open(good, Config{})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 40 {
		if err := c.Put(ca.Bundle(), record(f, ca, fmt.Sprintf("e%d", i), now, time.Hour)); err != nil {
			f.Fatal(err)
		}
	}
	_ = c.Close()
	seed, err := os.ReadFile(good)
	if err != nil {
		f.Fatal(err)
	}
	ps := int(binary.LittleEndian.Uint32(seed[16+8:]))
	f.Add(uint32(2*ps+10), []byte{0xff, 0xff}, true)
	f.Add(uint32(len(seed)/2), []byte("garbage garbage garbage"), true)
	f.Add(uint32(16+32), []byte{3, 0, 0, 0, 0, 0, 0, 0}, true) // freelist page id
	f.Add(uint32(0), []byte{}, false)
	f.Fuzz(func(t *testing.T, off uint32, patch []byte, fixMeta bool) {
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
		path := filepath.Join(t.TempDir(), "cache.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Open(path, Config{Clock: clocktest.NewClock(now)})
		if err != nil {
			t.Fatalf("Open of a damaged file failed instead of moving it aside: %v", err)
		}
		defer c.Close()
		if _, _, err := c.Load(td); err != nil {
			t.Logf("Load: %v", err)
		}
		if err := c.Put(ca.Bundle(), record(t, ca, "new", now, time.Hour)); err != nil {
			t.Fatalf("Put after Open: %v", err)
		}
	})
}
