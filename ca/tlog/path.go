package tlog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// TileHeight is the height of a tile: a tile of level L holds the tree
// nodes at level 8*L.
const TileHeight = 8

// TileWidth is the number of hashes (or entries) in a full tile (bundle).
const TileWidth = 1 << TileHeight

// maxTileLevel is the highest tile level the path syntax allows.
const maxTileLevel = 63

// maxPathLen bounds the request paths ParsePath reads: the longest valid
// one ("tile/63/x018/x446/x744/x073/x709/x551/615.p/255") is far shorter.
const maxPathLen = 128

// ErrBadPath: a request path is not a tlog-tiles resource. The wrapping
// error says what is wrong.
var ErrBadPath = errors.New("tlog: not a tlog-tiles path")

// Resource is a parsed tlog-tiles resource.
type Resource struct {
	// Checkpoint is set for "checkpoint"; the other fields are then zero.
	Checkpoint bool
	// Entries is set for an entry bundle ("tile/entries/..."), clear for a
	// hash tile ("tile/<L>/...").
	Entries bool
	// Level is the tile level L (0 for entry bundles).
	Level uint8
	// Index is the tile index N.
	Index uint64
	// Width is the number of hashes or entries: TileWidth for a full tile,
	// 1 to TileWidth-1 for a partial one (".p/<W>").
	Width int
}

// Partial reports whether r is a partial tile or bundle.
func (r Resource) Partial() bool { return r.Width < TileWidth }

// String returns the canonical path of r, relative to the log's prefix.
func (r Resource) String() string {
	if r.Checkpoint {
		return "checkpoint"
	}
	level := strconv.Itoa(int(r.Level))
	if r.Entries {
		level = "entries"
	}
	s := "tile/" + level + "/" + encodeIndex(r.Index)
	if r.Partial() {
		s += ".p/" + strconv.Itoa(r.Width)
	}
	return s
}

// encodeIndex writes n in the tlog-tiles form: 3-digit groups, most
// significant first, all but the last prefixed with "x".
func encodeIndex(n uint64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/%s", n%1000, s)
	}
	return s
}

// ParsePath parses a resource path relative to the log's prefix (for
// example "checkpoint", "tile/0/x001/234.p/17", "tile/entries/000"). It
// accepts only the canonical form: no leading zeros in L or W, no empty,
// "." or ".." elements, no redundant leading "x000" groups, and W in 1 to
// 255.
func ParsePath(p string) (Resource, error) {
	if len(p) > maxPathLen {
		return Resource{}, fmt.Errorf("%w: the path is longer than %d bytes", ErrBadPath, maxPathLen)
	}
	if p == "checkpoint" {
		return Resource{Checkpoint: true}, nil
	}
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return Resource{}, fmt.Errorf("%w: want checkpoint, tile/<L>/<N> or tile/entries/<N>", ErrBadPath)
	}
	levelStr, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return Resource{}, fmt.Errorf("%w: a tile path needs a level and an index", ErrBadPath)
	}
	r := Resource{Width: TileWidth}
	if levelStr == "entries" {
		r.Entries = true
	} else {
		l, err := parseDecimal(levelStr, maxTileLevel)
		if err != nil {
			return Resource{}, fmt.Errorf("%w: tile level: %w", ErrBadPath, err)
		}
		r.Level = uint8(l)
	}
	rest, width, partial := strings.Cut(rest, ".p/")
	if partial {
		w, err := parseDecimal(width, TileWidth-1)
		if err != nil || w == 0 {
			return Resource{}, fmt.Errorf("%w: partial width %q is not 1 to %d", ErrBadPath, width, TileWidth-1)
		}
		r.Width = int(w)
	}
	n, err := parseIndex(rest)
	if err != nil {
		return Resource{}, fmt.Errorf("%w: tile index: %w", ErrBadPath, err)
	}
	r.Index = n
	return r, nil
}

// parseDecimal parses a canonical decimal number (no sign, no leading
// zero) of at most max.
func parseDecimal(s string, max uint64) (uint64, error) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return 0, fmt.Errorf("%q is more than %d", s, max)
	}
	return n, nil
}

// parseIndex parses the "x001/x234/567" form of a tile index.
func parseIndex(s string) (uint64, error) {
	groups := strings.Split(s, "/")
	var n uint64
	for i, g := range groups {
		last := i == len(groups)-1
		if !last {
			var ok bool
			if g, ok = strings.CutPrefix(g, "x"); !ok {
				return 0, fmt.Errorf("%q: every group but the last starts with x", s)
			}
		}
		if len(g) != 3 || strings.TrimLeft(g, "0123456789") != "" {
			return 0, fmt.Errorf("%q: groups are three decimal digits", s)
		}
		if i == 0 && !last && g == "000" {
			return 0, fmt.Errorf("%q: leading x000 group", s)
		}
		d, _ := strconv.ParseUint(g, 10, 64)
		if n > (^uint64(0)-d)/1000 {
			return 0, fmt.Errorf("%q overflows 64 bits", s)
		}
		n = n*1000 + d
	}
	return n, nil
}
