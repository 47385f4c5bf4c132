package monitor

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
)

// hashSize is the size of an RFC 6962 SHA-256 hash.
const hashSize = 32

// rangeFactory builds RFC 6962 compact ranges.
var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// tiles reads the hash tiles and entry bundles of a tree of a given size.
type tiles struct {
	f     *fetcher
	size  uint64
	cache map[[2]uint64][][]byte // (tile level, index) -> hashes, for node
}

func newTiles(f *fetcher, size uint64) *tiles {
	return &tiles{f: f, size: size, cache: map[[2]uint64][][]byte{}}
}

// width is the number of hashes tile (level, index) has in the tree.
func (t *tiles) width(level, index uint64) int {
	if p := layout.PartialTileSize(level, index, t.size); p > 0 {
		return int(p)
	}
	return layout.TileWidth
}

// tile fetches the hash tile (level, index) of the tree and checks its length.
func (t *tiles) tile(ctx context.Context, level, index uint64) ([][]byte, error) {
	w := t.width(level, index)
	p := layout.TilePath(level, index, partial(w))
	body, err := t.f.get(ctx, p, int64(w*hashSize))
	if err != nil {
		return nil, err
	}
	if len(body) != w*hashSize {
		return nil, fmt.Errorf("%w: %s has %d bytes, not the %d of %d hashes", ErrInvalid, p, len(body), w*hashSize, w)
	}
	out := make([][]byte, w)
	for i := range out {
		out[i] = body[i*hashSize : (i+1)*hashSize]
	}
	return out, nil
}

func partial(w int) uint8 {
	if w == layout.TileWidth {
		return 0
	}
	return uint8(w)
}

// node returns the hash of the complete tree node (level, index), read
// from the tile that holds its subtree and hashed up within it. Nothing
// is verified here: callers fold the hash into a root and compare.
func (t *tiles) node(ctx context.Context, level uint, index uint64) ([]byte, error) {
	tl, ti, nl, ni := layout.NodeCoordsToTileAddress(uint64(level), index)
	key := [2]uint64{tl, ti}
	hashes, ok := t.cache[key]
	if !ok {
		var err error
		if hashes, err = t.tile(ctx, tl, ti); err != nil {
			return nil, err
		}
		t.cache[key] = hashes
	}
	first, n := ni<<nl, uint64(1)<<nl
	if first+n > uint64(len(hashes)) {
		return nil, fmt.Errorf("%w: tile %d/%d has %d hashes; node (%d, %d) needs %d", ErrInvalid, tl, ti, len(hashes), level, index, first+n)
	}
	r := rangeFactory.NewEmptyRange(first)
	for _, h := range hashes[first : first+n] {
		if err := r.Append(h, nil); err != nil {
			return nil, fmt.Errorf("monitor: node (%d, %d): %w", level, index, err)
		}
	}
	return r.Hashes()[0], nil
}

// prefix returns the compact range [0, size) built from the tiles.
func (t *tiles) prefix(ctx context.Context, size uint64) (*compact.Range, error) {
	return t.nodes(ctx, 0, size)
}

// nodes returns the compact range [begin, end) built from the tiles.
func (t *tiles) nodes(ctx context.Context, begin, end uint64) (*compact.Range, error) {
	ids := compact.RangeNodes(begin, end, nil)
	hashes := make([][]byte, 0, len(ids))
	for _, id := range ids {
		h, err := t.node(ctx, id.Level, id.Index)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, h)
	}
	r, err := rangeFactory.NewRange(begin, end, hashes)
	if err != nil {
		return nil, fmt.Errorf("monitor: tree nodes [%d, %d): %w", begin, end, err)
	}
	return r, nil
}

// bundle fetches entry bundle index and splits it into its entries.
func (t *tiles) bundle(ctx context.Context, index uint64) ([][]byte, error) {
	w := t.width(0, index)
	p := layout.EntriesPath(index, partial(w))
	body, err := t.f.get(ctx, p, t.f.limits.MaxBundle)
	if err != nil {
		return nil, err
	}
	return parseBundle(body, w, index, p)
}

// parseBundle splits the entry bundle index (at path p, of width w) into
// its entries: each a 2-byte big-endian length and that many bytes,
// exactly w entries, nothing after them.
func parseBundle(body []byte, w int, index uint64, p string) ([][]byte, error) {
	out := make([][]byte, 0, w)
	for len(out) < w {
		if len(body) < 2 {
			return nil, fmt.Errorf("%w: %s is truncated: it ends after %d of its %d entries", ErrInvalid, p, len(out), w)
		}
		n := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+n {
			return nil, fmt.Errorf("%w: %s is truncated: entry %d announces %d bytes, %d remain", ErrInvalid, p, index*layout.EntryBundleWidth+uint64(len(out)), n, len(body)-2)
		}
		out = append(out, body[2:2+n])
		body = body[2+n:]
	}
	if len(body) > 0 {
		return nil, fmt.Errorf("%w: %s has %d bytes after its %d entries", ErrInvalid, p, len(body), w)
	}
	return out, nil
}
