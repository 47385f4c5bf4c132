package boltcheck

import (
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Salvage copies what can be read of the damaged bbolt file at src into a
// new bbolt file at dst: every bucket, key and value on pages that pass
// Check's tests, skipping damaged subtrees. It never maps src: it reads it
// as Check does, so no damage can crash or hang it. It returns the damage
// it skipped (at most 100 entries) and how much there was in all; dst is
// a sound bbolt file that bbolt can read without risk.
func Salvage(src, dst string) ([]*DamageError, int, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("stat %s: %w", src, err)
	}
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return nil, 0, fmt.Errorf("create %s: %w", dst, err)
	}
	w := &salvager{db: out, src: src}
	c := &checker{f: f, path: src, size: fi.Size(), seen: map[uint64]bool{}, emit: w.add}
	err = c.run()
	if err == nil {
		err = w.flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	for _, e := range w.failed {
		c.skip(e)
	}
	return c.problems, c.nprob, err
}

// op is one bucket (k nil) or key to write into the salvaged file.
type op struct {
	path [][]byte
	k, v []byte
}

// salvager writes what the checker reads, a few thousand keys per
// transaction.
type salvager struct {
	db     *bolt.DB
	src    string
	ops    []op
	failed []*DamageError
}

func (s *salvager) add(path [][]byte, k, v []byte) error {
	if len(path) == 0 {
		return nil // bbolt keeps only buckets at the top level
	}
	cp := make([][]byte, len(path))
	for i := range path {
		cp[i] = append([]byte(nil), path[i]...)
	}
	s.ops = append(s.ops, op{path: cp, k: append([]byte(nil), k...), v: append([]byte(nil), v...)})
	if k == nil {
		s.ops[len(s.ops)-1].k = nil
	}
	if len(s.ops) >= 5000 {
		return s.flush()
	}
	return nil
}

func (s *salvager) flush() error {
	if len(s.ops) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range s.ops {
			if err := put(tx, o); err != nil {
				s.failed = append(s.failed, &DamageError{Path: s.src, Page: -1, Problem: fmt.Sprintf("could not copy key %x: %v", o.k, err)})
			}
		}
		return nil
	})
	s.ops = s.ops[:0]
	return err
}

// put writes one op, creating the buckets on its path.
func put(tx *bolt.Tx, o op) error {
	b, err := tx.CreateBucketIfNotExists(o.path[0])
	for _, name := range o.path[1:] {
		if err != nil {
			break
		}
		b, err = b.CreateBucketIfNotExists(name)
	}
	if err != nil || o.k == nil {
		return err
	}
	return b.Put(o.k, o.v)
}
