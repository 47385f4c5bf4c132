// Package cache keeps the node agent's SVIDs in a bbolt file so that a
// restarted agent serves its workloads at once, without the CA.
package cache

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/castellan-dev/castellan/internal/boltcheck"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketSVIDs = []byte("svids")
	bucketMeta  = []byte("meta")
	keyBundle   = []byte("bundle")
)

// Cache is the agent's persistent SVID store: one bbolt record per
// identity, keyed by registration entry ID, holding the entry (ID, SPIFFE
// ID, selectors, TTL), the chain (DER), the private key (PKCS#8), the trust
// bundle (DER), the expiry and the next rotation time. The file is 0600.
//
// Contract:
//   - Get returns (Record{}, false, nil) when no valid record exists for the
//     ID. A record that fails validation (expired, key not matching the leaf,
//     unparsable) is never returned: Get and Load delete it and log why.
//   - Put, Delete and SetBundle are atomic (all records of one call or none)
//     and durable when they return nil: bbolt has committed and synced the
//     file. Callers publish an SVID only after Put returned nil.
//   - Delete of a missing ID is not an error.
//   - A Cache is safe for concurrent use; bbolt serialises writers and lets
//     readers run alongside them.
//
// Open never fails because the file is corrupt: it logs, renames the file to
// cache.db.corrupt-<time> and starts an empty cache.
type Cache struct {
	db    *bolt.DB
	clock clock.Clock
	log   *slog.Logger
}

// Config holds the settings of a Cache; its zero value is the default.
type Config struct {
	// Clock rejects expired records and dates a corrupt file moved aside
	// (nil: the wall clock).
	Clock clock.Clock
	// Logger receives corrupt files and rejected records (nil: discard).
	Logger *slog.Logger
}

// Open opens or creates the cache file at path. A file another process
// holds locked is an error (after one second); a corrupt one is moved aside.
func Open(path string, cfg Config) (*Cache, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{clock: clock.OrSystem(cfg.Clock), log: cfg.Logger}
	db, err := openChecked(path)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("cache: %s is locked by another process (is another agent running with this --data-dir?): %w", path, err)
	}
	if err != nil {
		aside := fmt.Sprintf("%s.corrupt-%s", path, c.clock.Now().UTC().Format("20060102T150405Z"))
		c.log.Error("cache file is unreadable; moving it aside and starting empty", "path", path, "moved_to", aside, "error", err.Error())
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("cache: move corrupt %s aside: %w", path, rerr)
		}
		if db, err = openChecked(path); err != nil {
			return nil, fmt.Errorf("cache: create %s: %w", path, err)
		}
	}
	c.db = db
	return c, nil
}

// openChecked opens the file after checking every page (boltcheck: bbolt
// panics or faults on damaged pages, in part on goroutines of its own that
// no caller can recover) and bbolt's tx.Check, and creates the buckets.
// Any failure other than a lock timeout means the file is corrupt.
func openChecked(path string) (*bolt.DB, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o600 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("cache: chmod %s: %w", path, err)
		}
	}
	db, err := boltcheck.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSVIDs, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the file.
func (c *Cache) Close() error { return c.db.Close() }

// Put stores records, replacing those with the same entry IDs, each with
// the given trust bundle, in one durable transaction.
func (c *Cache) Put(bundle *x509bundle.Bundle, records ...Record) error {
	bder := bundleDER(bundle)
	vals := make([][]byte, len(records))
	for i, r := range records {
		rw, err := toRaw(r, bder)
		if err != nil {
			return err
		}
		vals[i] = encode(rw)
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSVIDs)
		for i, r := range records {
			if err := b.Put([]byte(r.EntryID), vals[i]); err != nil {
				return err
			}
		}
		return putBundle(tx, bder)
	})
	if err != nil {
		return fmt.Errorf("cache: put: %w", err)
	}
	return nil
}

// Delete removes the records of the given entry IDs in one durable
// transaction.
func (c *Cache) Delete(entryIDs ...string) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSVIDs)
		for _, id := range entryIDs {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: delete: %w", err)
	}
	return nil
}

// SetBundle rewrites the trust bundle of every record, in one durable
// transaction.
func (c *Cache) SetBundle(bundle *x509bundle.Bundle) error {
	bder := bundleDER(bundle)
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSVIDs)
		type kv struct{ k, v []byte }
		var updates []kv
		err := b.ForEach(func(k, v []byte) error {
			r, err := decode(v)
			if err != nil {
				return nil // Load reports and removes it
			}
			r.bundle = bder
			updates = append(updates, kv{slices.Clone(k), encode(r)})
			return nil
		})
		if err != nil {
			return err
		}
		for _, u := range updates {
			if err := b.Put(u.k, u.v); err != nil {
				return err
			}
		}
		return putBundle(tx, bder)
	})
	if err != nil {
		return fmt.Errorf("cache: set bundle: %w", err)
	}
	return nil
}

// Get returns the valid record for an entry ID, or false if there is none.
func (c *Cache) Get(entryID string) (Record, bool, error) {
	var (
		rec Record
		ok  bool
		bad error
	)
	err := c.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSVIDs).Get([]byte(entryID))
		if v == nil {
			return nil
		}
		p := &parser{shared: map[string]*x509.Certificate{}}
		rec, _, bad = c.parse(p, v)
		ok = bad == nil
		return nil
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("cache: get: %w", err)
	}
	if bad != nil {
		c.reject(entryID, bad)
	}
	return rec, ok, nil
}

// Load returns every valid record, sorted by entry ID, and the trust bundle
// (nil if the cache has none). Records that fail validation are logged and
// deleted.
func (c *Cache) Load(td spiffeid.TrustDomain) ([]Record, *x509bundle.Bundle, error) {
	var (
		recs   []Record
		bder   [][]byte
		reject = map[string]error{}
	)
	p := &parser{shared: map[string]*x509.Certificate{}}
	err := c.db.View(func(tx *bolt.Tx) error {
		bder = cloneList(listFromBytes(tx.Bucket(bucketMeta).Get(keyBundle)))
		return tx.Bucket(bucketSVIDs).ForEach(func(k, v []byte) error {
			r, _, err := c.parse(p, v)
			if err != nil {
				reject[string(k)] = err
				return nil
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: load: %w", err)
	}
	for id, why := range reject {
		c.reject(id, why)
	}
	bundle, err := parseBundle(td, bder)
	if err != nil {
		c.log.Error("cached trust bundle is unusable; waiting for the CA's", "error", err.Error())
		bundle = nil
	}
	return recs, bundle, nil
}

func (c *Cache) parse(p *parser, v []byte) (Record, [][]byte, error) {
	rw, err := decode(v)
	if err != nil {
		return Record{}, nil, err
	}
	svid, err := p.svid(rw, c.clock.Now())
	if err != nil {
		return Record{}, nil, err
	}
	return Record{
		EntryID:      rw.entryID,
		Selectors:    slices.Clone(rw.selectors),
		TTL:          rw.ttl,
		SVID:         svid,
		NextRotation: rw.nextRot,
	}, rw.bundle, nil
}

// reject deletes an invalid record so it is never served.
func (c *Cache) reject(entryID string, why error) {
	c.log.Warn("dropping invalid cached SVID", "entry_id", entryID, "reason", why.Error())
	if err := c.Delete(entryID); err != nil {
		c.log.Error("could not delete invalid cached SVID", "entry_id", entryID, "error", err.Error())
	}
}

func bundleDER(b *x509bundle.Bundle) [][]byte {
	if b == nil {
		return nil
	}
	var out [][]byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw)
	}
	return out
}

func putBundle(tx *bolt.Tx, der [][]byte) error {
	if len(der) == 0 {
		return nil
	}
	return tx.Bucket(bucketMeta).Put(keyBundle, listBytes(der))
}

func listBytes(l [][]byte) []byte {
	r := raw{bundle: l}
	return encode(r)
}

func listFromBytes(b []byte) [][]byte {
	if b == nil {
		return nil
	}
	r, err := decode(b)
	if err != nil {
		return nil
	}
	return r.bundle
}

func cloneList(l [][]byte) [][]byte {
	out := make([][]byte, len(l))
	for i, x := range l {
		out[i] = slices.Clone(x)
	}
	return out
}

func parseBundle(td spiffeid.TrustDomain, der [][]byte) (*x509bundle.Bundle, error) {
	if len(der) == 0 {
		return nil, nil
	}
	certs := make([]*x509.Certificate, 0, len(der))
	for _, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("cache: bundle: %w", err)
		}
		certs = append(certs, c)
	}
	return x509bundle.FromX509Authorities(td, certs), nil
}
