package boltcheck

import (
	"bytes"
	"encoding/binary"
)

// page is one page read from the file, overflow pages included, or an
// inline bucket's page (id 0) held in its parent's value.
type page struct {
	id    uint64
	flags uint16
	count int
	buf   []byte // the whole page, header included
}

var le = binary.LittleEndian

// readPage reads page id and its overflow pages, checking that they lie
// below the high-water mark, that the header names the page, and that no
// page was reached before.
func (c *checker) readPage(id uint64) (*page, error) {
	ps := uint64(c.m.pageSize)
	if id < 2 || id >= c.m.hwm {
		return nil, c.damaged(int64(id), "page id outside the file's pages [2, %d)", c.m.hwm)
	}
	h := make([]byte, ps) // one read for the usual page without overflow
	if _, err := c.f.ReadAt(h, int64(id*ps)); err != nil {
		return nil, c.damaged(int64(id), "cannot read the page: %v", err)
	}
	if got := le.Uint64(h[0:]); got != id {
		return nil, c.damaged(int64(id), "header names page %d", got)
	}
	overflow := uint64(le.Uint32(h[12:]))
	if overflow >= c.m.hwm-id {
		return nil, c.damaged(int64(id), "%d overflow pages run past the file's %d pages", overflow, c.m.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return nil, c.damaged(int64(i), "reached twice (a page may belong to one place only)")
		}
		c.seen[i] = true
	}
	buf := h
	if overflow > 0 {
		buf = make([]byte, (overflow+1)*ps)
		if _, err := c.f.ReadAt(buf, int64(id*ps)); err != nil {
			return nil, c.damaged(int64(id), "cannot read the page: %v", err)
		}
	}
	return &page{id: id, flags: le.Uint16(h[8:]), count: int(le.Uint16(h[10:])), buf: buf}, nil
}

// inlinePage parses the page an inline bucket keeps in its value.
func (c *checker) inlinePage(parent uint64, v []byte) (*page, error) {
	if len(v) < bucketHeader+pageHeaderSize {
		return nil, c.damaged(int64(parent), "inline bucket value of %d bytes is too short for its page", len(v))
	}
	b := v[bucketHeader:]
	p := &page{id: parent, flags: le.Uint16(b[8:]), count: int(le.Uint16(b[10:])), buf: b}
	if p.flags != flagLeaf {
		return nil, c.damaged(int64(parent), "inline bucket page has type %#x, want a leaf", p.flags)
	}
	return p, nil
}

// elem returns element i's fields after checking the element table fits.
func (c *checker) elem(p *page, i int) []byte {
	off := pageHeaderSize + i*elemSize
	return p.buf[off : off+elemSize]
}

// slice returns n bytes at element i's offset+pos, or false if they run
// past the page.
func (p *page) slice(i int, pos, n uint64) ([]byte, bool) {
	start := uint64(pageHeaderSize+i*elemSize) + pos
	if pos > uint64(len(p.buf)) || n > uint64(len(p.buf)) || start+n > uint64(len(p.buf)) {
		return nil, false
	}
	return p.buf[start : start+n], true
}

// tree walks the B+tree rooted at id (or the inline page p when p is not
// nil), checking key order within [lo, hi), and every nested bucket. It
// returns the largest key in the subtree.
func (c *checker) tree(id uint64, lo, hi []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, c.damaged(int64(id), "tree deeper than %d levels (a cycle?)", maxDepth)
	}
	p, err := c.readPage(id)
	if err != nil {
		return nil, err
	}
	return c.walk(p, lo, hi, depth)
}

// walk checks one page already read and descends into its children.
func (c *checker) walk(p *page, lo, hi []byte, depth int) ([]byte, error) {
	if pageHeaderSize+p.count*elemSize > len(p.buf) {
		return nil, c.damaged(int64(p.id), "%d elements do not fit in a %d-byte page", p.count, len(p.buf))
	}
	switch p.flags {
	case flagBranch:
		return c.branch(p, lo, hi, depth)
	case flagLeaf:
		return c.leaf(p, lo, hi, depth)
	}
	return nil, c.damaged(int64(p.id), "page type %#x where a branch or leaf page belongs", p.flags)
}

func (c *checker) branch(p *page, lo, hi []byte, depth int) ([]byte, error) {
	if p.count == 0 {
		return nil, c.damaged(int64(p.id), "branch page with no elements")
	}
	keys := make([][]byte, p.count)
	for i := range keys {
		e := c.elem(p, i)
		k, ok := p.slice(i, uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:])))
		if !ok {
			return nil, c.damaged(int64(p.id), "branch element %d: key runs past the page", i)
		}
		keys[i] = k
	}
	prev := lo
	var maxKey []byte
	for i, k := range keys {
		if err := c.order(p.id, i, k, prev, hi); err != nil {
			if c.skip(err) {
				continue
			}
			return nil, err
		}
		next := hi
		if i+1 < len(keys) {
			next = keys[i+1]
		}
		m, err := c.tree(le.Uint64(c.elem(p, i)[8:]), k, next, depth+1)
		if err != nil {
			if c.skip(err) {
				continue
			}
			return nil, err
		}
		if m != nil {
			prev, maxKey = m, m
		}
	}
	return maxKey, nil
}

func (c *checker) leaf(p *page, lo, hi []byte, depth int) ([]byte, error) {
	prev := lo
	for i := range p.count {
		e := c.elem(p, i)
		flags, pos, ks, vs := le.Uint32(e[0:]), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		kv, ok := p.slice(i, pos, ks+vs)
		if !ok {
			if err := c.damaged(int64(p.id), "leaf element %d: key and value run past the page", i); !c.skip(err) {
				return nil, err
			}
			continue
		}
		k, v := kv[:ks], kv[ks:]
		if err := c.order(p.id, i, k, prev, hi); err != nil {
			if c.skip(err) {
				continue
			}
			return nil, err
		}
		prev = k
		if err := c.element(p.id, flags, k, v, depth); err != nil {
			if c.skip(err) {
				continue
			}
			return nil, err
		}
	}
	return prev, nil
}

// element checks a nested bucket, or hands a key and value to the
// salvager.
func (c *checker) element(id uint64, flags uint32, k, v []byte, depth int) error {
	if flags&bucketLeaf == 0 {
		if c.emit == nil {
			return nil
		}
		return c.emit(c.bpath, k, v)
	}
	c.bpath = append(c.bpath, k)
	defer func() { c.bpath = c.bpath[:len(c.bpath)-1] }()
	if c.emit != nil {
		if err := c.emit(c.bpath, nil, nil); err != nil {
			return err
		}
	}
	return c.bucket(id, v, depth)
}

// bucket checks a nested bucket whose header is in v.
func (c *checker) bucket(parent uint64, v []byte, depth int) error {
	if len(v) < bucketHeader {
		return c.damaged(int64(parent), "bucket value of %d bytes is shorter than a bucket header", len(v))
	}
	if root := le.Uint64(v); root != 0 {
		_, err := c.tree(root, nil, nil, depth+1)
		return err
	}
	p, err := c.inlinePage(parent, v)
	if err != nil {
		return err
	}
	if depth+1 > maxDepth {
		return c.damaged(int64(parent), "buckets nested deeper than %d levels", maxDepth)
	}
	_, err = c.walk(p, nil, nil, depth+1)
	return err
}

// order checks key i of page id against the previous key and the upper
// bound, as bbolt's own check does: keys strictly increase, the first is
// at least the parent's separator, and all are below the next separator.
func (c *checker) order(id uint64, i int, k, prev, hi []byte) error {
	if len(k) == 0 {
		return c.damaged(int64(id), "key %d is empty (bbolt never stores one)", i)
	}
	if prev != nil {
		if cmp := bytes.Compare(prev, k); cmp > 0 || (cmp == 0 && i > 0) {
			return c.damaged(int64(id), "key %d is out of order", i)
		}
	}
	if hi != nil && bytes.Compare(k, hi) >= 0 {
		return c.damaged(int64(id), "key %d is not below its parent's next key", i)
	}
	return nil
}

// checkFreelist checks the freelist page: its type, that its ids fit in
// the page, and that each freed id is a distinct page of the file.
func (c *checker) checkFreelist(id uint64) error {
	p, err := c.readPage(id)
	if err != nil {
		return err
	}
	if p.flags != flagFreelist {
		return c.damaged(int64(id), "page type %#x where the freelist belongs", p.flags)
	}
	start, n := uint64(pageHeaderSize), uint64(p.count)
	if p.count == 0xFFFF {
		n = le.Uint64(p.buf[pageHeaderSize:])
		start += 8
	}
	if n > (uint64(len(p.buf))-start)/8 {
		return c.damaged(int64(id), "freelist of %d ids does not fit in its %d bytes", n, len(p.buf))
	}
	freed := make(map[uint64]bool, n)
	for i := range n {
		f := le.Uint64(p.buf[start+8*i:])
		if f < 2 || f >= c.m.hwm || freed[f] {
			return c.damaged(int64(id), "freelist entry %d (page %d) is not a distinct page of the file", i, f)
		}
		freed[f] = true
	}
	c.free = freed
	return nil
}
