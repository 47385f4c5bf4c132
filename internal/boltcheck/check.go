// Package boltcheck validates a bbolt file before bbolt maps it, so that a
// damaged file is reported as an error naming the file and the page instead
// of crashing the process.
//
// bbolt trusts its file: a damaged page makes it panic (in Open, while it
// reads the freelist or, for files written with NoFreelistSync, while it
// rebuilds the freelist on a goroutine of its own, where no caller can
// recover), or read outside its memory map and die of SIGSEGV. Check reads
// the file with ordinary reads, never through a map, and walks it the way
// bbolt will: both meta pages, the freelist, and every page of every
// bucket's B+tree, checking each page's header, bounds, type, element
// table, key order and that no page is reached twice. A file that passes
// Check can be opened and walked by bbolt without panicking; Open does both
// and then runs bbolt's own tx.Check. Salvage walks a damaged file the same
// way, skipping what is damaged, and copies the rest into a sound file.
//
// The check is as costly as reading the file once. It does not protect
// against a file changed by another process after Check returns.
package boltcheck

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// Page and meta layout of bbolt v1 files (little-endian, as on every
// platform we build for).
const (
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elemSize       = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHeader   = 16 // root pgid u64, sequence u64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	bucketLeaf   = 0x01

	magic      = 0xED0CDAED
	version    = 2
	noFreelist = ^uint64(0)

	// maxDepth bounds B+tree and bucket nesting; bbolt never builds trees
	// anywhere near this deep.
	maxDepth = 64
	// maxProblems bounds the damage Salvage lists.
	maxProblems = 100
)

// ErrDamaged is wrapped by every *DamageError; test with errors.Is.
var ErrDamaged = errors.New("bbolt file is damaged")

// DamageError says where a bbolt file is damaged.
type DamageError struct {
	Path string
	// Page is the damaged page's id; -1 when the damage is not in one page
	// (file too short, no valid meta page).
	Page int64
	// Problem says what is wrong with it, in words.
	Problem string
}

// Error implements error.
func (e *DamageError) Error() string {
	if e.Page < 0 {
		return fmt.Sprintf("%s is damaged: %s", e.Path, e.Problem)
	}
	return fmt.Sprintf("%s is damaged: page %d: %s", e.Path, e.Page, e.Problem)
}

// Unwrap makes errors.Is(err, ErrDamaged) true.
func (e *DamageError) Unwrap() error { return ErrDamaged }

// meta is the part of a bbolt meta page that Check uses.
type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64 // high-water mark: pages [0, hwm) are in use
	txid     uint64
}

// Check validates the bbolt file at path. A missing or empty file is
// valid (bbolt creates it). It returns a *DamageError for a damaged file
// and another error when the file cannot be read.
func Check(path string) error {
	_, err := check(path)
	return err
}

// check is Check, also returning the meta page in use (zero for a new
// file).
func check(path string) (meta, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return meta{}, nil
	}
	if err != nil {
		return meta{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return meta{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return meta{}, nil
	}
	c := &checker{f: f, path: path, size: fi.Size(), seen: map[uint64]bool{}}
	err = c.run()
	return c.m, err
}

// checker walks one file.
type checker struct {
	f    io.ReaderAt
	path string
	size int64
	m    meta
	seen map[uint64]bool // pages reached so far (overflow pages included)
	free map[uint64]bool // pages the freelist says are free

	// Salvage mode (emit set): damaged subtrees are recorded in problems
	// and skipped; every key and value read is handed to emit with the
	// path of its bucket (a nil key announces a bucket).
	emit     func(path [][]byte, k, v []byte) error
	bpath    [][]byte // the buckets around the element being walked
	problems []*DamageError
	nprob    int
}

// skip reports whether err is damage to record and skip (salvage mode).
func (c *checker) skip(err error) bool {
	var de *DamageError
	if c.emit == nil || !errors.As(err, &de) {
		return false
	}
	if c.nprob++; len(c.problems) < maxProblems {
		c.problems = append(c.problems, de)
	}
	return true
}

func (c *checker) damaged(page int64, format string, args ...any) error {
	return &DamageError{Path: c.path, Page: page, Problem: fmt.Sprintf(format, args...)}
}

func (c *checker) run() error {
	m, err := c.readMeta()
	if err != nil {
		return err
	}
	c.m = m
	for id := range uint64(2) { // bbolt asserts both headers even when it uses one meta
		h := make([]byte, pageHeaderSize)
		if _, err := c.f.ReadAt(h, int64(id)*int64(m.pageSize)); err != nil {
			return c.damaged(int64(id), "cannot read the meta page header: %v", err)
		}
		if got, fl := le.Uint64(h), le.Uint16(h[8:]); got != id || fl != flagMeta {
			return c.damaged(int64(id), "meta page header names page %d of type %#x", got, fl)
		}
	}
	if m.hwm < 2 || m.hwm > uint64(c.size)/uint64(m.pageSize) { // (bbolt's own check would loop over every page id)
		return c.damaged(-1, "the file is truncated: %d bytes, but its meta page says it holds %d pages of %d bytes", c.size, m.hwm, m.pageSize)
	}
	c.seen[0], c.seen[1] = true, true
	if m.freelist != noFreelist && c.emit == nil {
		if err := c.checkFreelist(m.freelist); err != nil {
			return err
		}
	}
	if _, err := c.tree(m.root, nil, nil, 0); err != nil {
		return err
	}
	for id := range c.free {
		if c.seen[id] {
			return c.damaged(int64(id), "in use, yet listed as free by the freelist")
		}
	}
	return nil
}

// readMeta finds the page size as bbolt does (from the first meta page
// that bbolt considers valid) and picks the meta page bbolt will use: the
// valid one with the higher transaction id. A meta page bbolt would accept
// with an impossible page size, or two that disagree, is damage: bbolt
// would read every page at the wrong offset.
func (c *checker) readMeta() (meta, error) {
	m0, err0 := c.metaAt(0)
	ps := m0.pageSize
	if err0 != nil { // bbolt then looks for the second meta page at 1KiB << i
		for i := 0; i <= 14 && ps == 0; i++ {
			if m1, err := c.metaAt(int64(1024) << i); err == nil {
				ps = m1.pageSize
			}
		}
		if ps == 0 {
			return meta{}, c.damaged(-1, "no valid meta page (not a bbolt file, or both meta pages are damaged: %v)", err0)
		}
	}
	if ps < 512 || ps > 1<<24 || ps&(ps-1) != 0 {
		return meta{}, c.damaged(0, "meta page gives an impossible page size %d", ps)
	}
	m1, err1 := c.metaAt(int64(ps))
	if err1 == nil && m1.pageSize != ps {
		return meta{}, c.damaged(1, "meta pages disagree on the page size (%d and %d)", ps, m1.pageSize)
	}
	switch {
	case err0 == nil && err1 == nil && m1.txid > m0.txid, err0 != nil && err1 == nil:
		return m1, nil
	case err0 == nil:
		return m0, nil
	}
	return meta{}, c.damaged(-1, "no valid meta page: %v", err0)
}

// metaAt reads the meta page at byte offset off and validates it as bbolt
// does (magic, version, checksum).
func (c *checker) metaAt(off int64) (meta, error) {
	b := make([]byte, pageHeaderSize+64)
	if _, err := c.f.ReadAt(b, off); err != nil {
		return meta{}, fmt.Errorf("meta page at byte %d: short file", off)
	}
	mb := b[pageHeaderSize:]
	if le.Uint32(mb[0:]) != magic {
		return meta{}, fmt.Errorf("meta page at byte %d: bad magic", off)
	}
	if v := le.Uint32(mb[4:]); v != version {
		return meta{}, fmt.Errorf("meta page at byte %d: version %d, want %d", off, v, version)
	}
	sum := fnv.New64a()
	sum.Write(mb[:56])
	if sum.Sum64() != le.Uint64(mb[56:]) {
		return meta{}, fmt.Errorf("meta page at byte %d: checksum mismatch", off)
	}
	return meta{pageSize: le.Uint32(mb[8:]), root: le.Uint64(mb[16:]), freelist: le.Uint64(mb[32:]),
		hwm: le.Uint64(mb[40:]), txid: le.Uint64(mb[48:])}, nil
}
