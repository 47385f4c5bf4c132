package monitor

import (
	"bytes"
	"context"
	"fmt"
	"sort"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/tessera/api/layout"
)

// tileCheck collects the tree nodes that folding the new entries produces
// at tile levels (tree levels 0, 8, 16, ...) and checks that the server's
// hash tiles hold exactly them, so that every tile a tlog-tiles client
// would read for the new entries is the signed tree's.
type tileCheck struct {
	t       *tiles
	pending map[[2]uint64]map[uint64][]byte // tile -> position -> hash
}

func newTileCheck(t *tiles) *tileCheck {
	return &tileCheck{t: t, pending: map[[2]uint64]map[uint64][]byte{}}
}

// visit is a compact.VisitFn recording nodes at tile levels.
func (c *tileCheck) visit(id compact.NodeID, hash []byte) {
	if id.Level%layout.TileHeight != 0 {
		return
	}
	tl := uint64(id.Level / layout.TileHeight)
	key := [2]uint64{tl, id.Index / layout.TileWidth}
	m := c.pending[key]
	if m == nil {
		m = map[uint64][]byte{}
		c.pending[key] = m
	}
	m[id.Index%layout.TileWidth] = bytes.Clone(hash)
}

// flush checks the pending tiles of level 0 (all levels if all is set)
// against the server's, in order, and forgets them.
func (c *tileCheck) flush(ctx context.Context, all bool) error {
	keys := make([][2]uint64, 0, len(c.pending))
	for k := range c.pending {
		if all || k[0] == 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		got, err := c.t.tile(ctx, k[0], k[1])
		if err != nil {
			return err
		}
		for pos, want := range c.pending[k] {
			if pos >= uint64(len(got)) || !bytes.Equal(got[pos], want) {
				return fmt.Errorf("%w: hash tile %s does not hold the hash of tree node (%d, %d) that the signed entries produce: the server serves tiles that are not the signed log",
					ErrInvalid, layout.TilePath(k[0], k[1], partial(len(got))), k[0]*layout.TileHeight, k[1]*layout.TileWidth+pos)
			}
		}
		delete(c.pending, k)
	}
	return nil
}
