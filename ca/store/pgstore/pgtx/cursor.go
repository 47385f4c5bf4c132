package pgtx

import "strings"

// Cursor pages: the first is small (a Seek usually reads a few keys), the
// next ones grow to pageMax.
const (
	firstPage = 32
	pageMax   = 1024
)

// cursor merges the database's keys, fetched page by page, with the
// overlay of the Update (as it was when the cursor was created): an
// overlay entry replaces or deletes the database's entry of its key.
type cursor struct {
	b          *bucket
	ov         []entry // sorted overlay snapshot
	oi         int     // next overlay entry
	page       []kv    // fetched database entries
	pi         int     // next page entry
	more       bool    // the database may hold keys after page
	pageSize   int
	positioned bool
}

type kv struct{ k, v []byte }

func (c *cursor) First() (k, v []byte) { return c.Seek(nil) }

func (c *cursor) Seek(seek []byte) (k, v []byte) {
	c.positioned, c.pageSize = true, firstPage
	c.oi = searchEntries(c.ov, string(seek))
	c.fetch(sqlPageFrom, append([]byte{}, seek...))
	return c.Next()
}

func (c *cursor) Next() (k, v []byte) {
	if !c.positioned {
		return c.First()
	}
	for c.b.tx.usable() {
		d, hasD := c.dbHead()
		if c.oi >= len(c.ov) { // only database entries left
			if !hasD {
				return nil, nil
			}
			c.pi++
			return d.k, d.v
		}
		o := c.ov[c.oi]
		if hasD {
			order := strings.Compare(o.key, string(d.k))
			if order > 0 {
				c.pi++
				return d.k, d.v
			}
			if order == 0 {
				c.pi++ // the overlay replaces the database's entry
			}
		}
		c.oi++
		if !o.del {
			return []byte(o.key), o.value
		}
	}
	return nil, nil // a failed transaction shows nothing more
}

// dbHead returns the next database entry, fetching a page if needed.
func (c *cursor) dbHead() (kv, bool) {
	if c.pi >= len(c.page) && c.more {
		last := c.page[len(c.page)-1].k
		c.fetch(sqlPageAfter, last)
	}
	if c.pi >= len(c.page) {
		return kv{}, false
	}
	return c.page[c.pi], true
}

// fetch loads the page of keys from (or after) from. A failed read fails
// the transaction and ends the cursor.
func (c *cursor) fetch(query string, from []byte) {
	t := c.b.tx
	c.page, c.pi, c.more = nil, 0, false
	if !t.usable() {
		return
	}
	rows, err := t.conn.Query(t.ctx, query, t.keyspace, []byte(c.b.name), from, c.pageSize)
	if err == nil {
		for rows.Next() {
			var e kv
			if err = rows.Scan(&e.k, &e.v); err != nil {
				break
			}
			if e.v == nil {
				e.v = []byte{}
			}
			c.page = append(c.page, e)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		t.fail(err)
		return
	}
	c.more = len(c.page) == c.pageSize
	c.pageSize = min(c.pageSize*4, pageMax)
}

// searchEntries is the index of the first entry with key >= k.
func searchEntries(es []entry, k string) int {
	lo, hi := 0, len(es)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if es[m].key < k {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
