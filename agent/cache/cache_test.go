package cache

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	bolt "go.etcd.io/bbolt"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func record(t testing.TB, ca *catest.CA, entry string, now time.Time, ttl time.Duration) Record {
	t.Helper()
	id := spiffeid.RequireFromPath(td, "/ns/default/sa/"+entry)
	return Record{
		EntryID:      entry,
		Selectors:    []state.Selector{{Type: "unix", Value: "uid:1000"}},
		TTL:          ttl,
		SVID:         ca.Issue(t, id, ttl), // at the CA clock: now (catest.At)
		NextRotation: now.Add(ttl / 2),
	}
}

func openAt(t testing.TB, path string, clk *clocktest.Clock) *Cache {
	t.Helper()
	c, err := Open(path, Config{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestPutThenLoadAfterReopen(t *testing.T) {
	now := time.Now()
	ca := catest.New(t, td, catest.Config{Clock: clock.Frozen(now)})
	path := filepath.Join(t.TempDir(), "cache.db")
	c := openAt(t, path, clocktest.NewClock(now))
	a, b := record(t, ca, "a", now, time.Hour), record(t, ca, "b", now, time.Hour)
	if err := c.Put(ca.Bundle(), a, b); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file mode %v, want 0600", fi.Mode().Perm())
	}
	c = openAt(t, path, clocktest.NewClock(now))
	recs, bundle, err := c.Load(td)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].EntryID != "a" || recs[1].EntryID != "b" {
		t.Fatalf("Load returned %d records, want a and b", len(recs))
	}
	if !bundle.Equal(ca.Bundle()) {
		t.Fatal("loaded bundle differs from the stored one")
	}
	got := recs[0]
	if got.SVID.ID != a.SVID.ID || !got.SVID.Certificates[0].Equal(a.SVID.Certificates[0]) {
		t.Fatal("loaded SVID differs from the stored one")
	}
	if !got.NextRotation.Equal(a.NextRotation) || got.TTL != time.Hour || got.Selectors[0] != a.Selectors[0] {
		t.Fatalf("loaded metadata %+v differs from stored %+v", got, a)
	}
	if _, _, err := x509svid.Verify(got.SVID.Certificates, bundle); err != nil {
		t.Fatalf("loaded SVID does not verify: %v", err)
	}
	// Intermediates are shared between records.
	if recs[0].SVID.Certificates[1] != recs[1].SVID.Certificates[1] {
		t.Fatal("intermediate is parsed once per record, want it shared")
	}
}

func TestGetMissingReturnsFalse(t *testing.T) {
	now := time.Now()
	c := openAt(t, filepath.Join(t.TempDir(), "cache.db"), clocktest.NewClock(now))
	_, ok, err := c.Get("nope")
	if err != nil || ok {
		t.Fatalf("Get(missing) = ok %v err %v, want false, nil", ok, err)
	}
}

func TestExpiredRecordIsNeverReturnedAndIsDeleted(t *testing.T) {
	now := time.Now()
	ca := catest.New(t, td, catest.Config{Clock: clock.Frozen(now)})
	path := filepath.Join(t.TempDir(), "cache.db")
	clk := clocktest.NewClock(now)
	c := openAt(t, path, clk)
	if err := c.Put(ca.Bundle(), record(t, ca, "short", now, 10*time.Second), record(t, ca, "long", now, time.Hour)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second) // exactly NotAfter: expired
	recs, _, err := c.Load(td)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].EntryID != "long" {
		t.Fatalf("Load returned %d records, want only the unexpired one", len(recs))
	}
	// Even when valid again (reopened with a clock 5s before NotAfter),
	// the record is gone: it was deleted from the file.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openAt(t, path, clocktest.NewClock(now.Add(5*time.Second)))
	if _, ok, _ := c.Get("short"); ok {
		t.Fatal("expired record was not deleted")
	}
}

func TestPutRefusesMismatchedKey(t *testing.T) {
	now := time.Now()
	ca := catest.New(t, td, catest.Config{Clock: clock.Frozen(now)})
	c := openAt(t, filepath.Join(t.TempDir(), "cache.db"), clocktest.NewClock(now))
	r := record(t, ca, "a", now, time.Hour)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r.SVID = &x509svid.SVID{ID: r.SVID.ID, Certificates: r.SVID.Certificates, PrivateKey: other}
	if err := c.Put(ca.Bundle(), r); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Put with mismatched key: err = %v, want a key mismatch error", err)
	}
}

func TestMismatchedKeyOnDiskIsRejectedOnLoad(t *testing.T) {
	now := time.Now()
	ca := catest.New(t, td, catest.Config{Clock: clock.Frozen(now)})
	c := openAt(t, filepath.Join(t.TempDir(), "cache.db"), clocktest.NewClock(now))
	a, b := record(t, ca, "a", now, time.Hour), record(t, ca, "b", now, time.Hour)
	ra, err := toRaw(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := toRaw(b, nil)
	ra.key = rb.key // a's chain with b's key
	if err := c.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSVIDs).Put([]byte("a"), encode(ra)) }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Get("a"); ok {
		t.Fatal("record whose key does not match its leaf was returned")
	}
}

func TestCorruptFileIsMovedAsideAndReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache.db")
	garbage := []byte(strings.Repeat("not a bbolt file ", 1000))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	c := openAt(t, path, clocktest.NewClock(now))
	recs, bundle, err := c.Load(td)
	if err != nil || len(recs) != 0 || bundle != nil {
		t.Fatalf("fresh cache Load = %d records, bundle %v, err %v; want empty", len(recs), bundle, err)
	}
	aside := path + ".corrupt-20260304T050607Z"
	got, err := os.ReadFile(aside)
	if err != nil {
		t.Fatalf("corrupt file not moved aside: %v", err)
	}
	if string(got) != string(garbage) {
		t.Fatal("moved-aside file differs from the corrupt original")
	}
}

// bbolt panics, instead of failing, on some damaged pages: reading a
// freelist page of the wrong type while opening, and any damaged page while
// tx.Check reads it on its own goroutine. Neither may crash the agent.
func TestDamagedPageIsMovedAsideAndReplaced(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  int // offset in the meta of the page ID to damage
	}{{"freelist", 32}, {"root", 16}} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
			ca := catest.New(t, td, catest.Config{Clock: clock.Frozen(now)})
			path := filepath.Join(t.TempDir(), "cache.db")
			c := openAt(t, path, clocktest.NewClock(now))
			if err := c.Put(ca.Bundle(), record(t, ca, "a", now, time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Page header: id u64, flags u16, ...; the meta follows the
			// header of pages 0 and 1: magic, version, page size, flags,
			// root {pgid, sequence}, freelist pgid.
			ps := int(binary.LittleEndian.Uint32(data[16+8:]))
			for m := range 2 {
				pg := int(binary.LittleEndian.Uint64(data[m*ps+16+tc.off:]))
				binary.LittleEndian.PutUint16(data[pg*ps+8:], 0) // no page type
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			c = openAt(t, path, clocktest.NewClock(now))
			if recs, _, err := c.Load(td); err != nil || len(recs) != 0 {
				t.Fatalf("Load = %d records, %v; want a fresh empty cache", len(recs), err)
			}
			if _, err := os.Stat(path + ".corrupt-20260304T050607Z"); err != nil {
				t.Fatalf("damaged file not moved aside: %v", err)
			}
		})
	}
}

func TestTruncatedRecordIsRejected(t *testing.T) {
	now := time.Now()
	ca := catest.New(t, td, catest.Config{Clock: clock.Frozen(now)})
	rw, err := toRaw(record(t, ca, "a", now, time.Hour), bundleDER(ca.Bundle()))
	if err != nil {
		t.Fatal(err)
	}
	full := encode(rw)
	if _, err := decode(full); err != nil {
		t.Fatalf("decode(full) = %v", err)
	}
	for n := range len(full) {
		if _, err := decode(full[:n]); err == nil {
			t.Fatalf("decode of %d of %d bytes succeeded", n, len(full))
		}
	}
}

func TestSetBundleRewritesEveryRecord(t *testing.T) {
	now := time.Now()
	ca, next := catest.New(t, td, catest.Config{Clock: clock.Frozen(now)}), catest.New(t, td, catest.Config{Clock: clock.Frozen(now)})
	c := openAt(t, filepath.Join(t.TempDir(), "cache.db"), clocktest.NewClock(now))
	if err := c.Put(ca.Bundle(), record(t, ca, "a", now, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBundle(next.Bundle()); err != nil {
		t.Fatal(err)
	}
	_, bundle, _ := c.Load(td)
	if !bundle.Equal(next.Bundle()) {
		t.Fatal("bundle not replaced")
	}
	err := c.db.View(func(tx *bolt.Tx) error {
		r, err := decode(tx.Bucket(bucketSVIDs).Get([]byte("a")))
		if err != nil {
			return err
		}
		if len(r.bundle) != 1 || string(r.bundle[0]) != string(bundleDER(next.Bundle())[0]) {
			return fmt.Errorf("record bundle not rewritten")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeleteMissingIsNoError(t *testing.T) {
	now := time.Now()
	c := openAt(t, filepath.Join(t.TempDir(), "cache.db"), clocktest.NewClock(now))
	if err := c.Delete("nope"); err != nil {
		t.Fatal(err)
	}
}
