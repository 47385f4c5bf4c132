package tlog

import (
	"errors"
	"strings"
	"testing"

	"github.com/transparency-dev/tessera/api/layout"
)

func TestParsePathAcceptsCanonicalPaths(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Resource
	}{
		{"checkpoint", Resource{Checkpoint: true}},
		{"tile/0/000", Resource{Index: 0, Width: 256}},
		{"tile/0/001.p/17", Resource{Index: 1, Width: 17}},
		{"tile/3/x001/x234/067", Resource{Level: 3, Index: 1234067, Width: 256}},
		{"tile/63/x018/x446/x744/x073/x709/x551/615.p/255", Resource{Level: 63, Index: ^uint64(0), Width: 255}},
		{"tile/entries/999", Resource{Entries: true, Index: 999, Width: 256}},
		{"tile/entries/x001/000.p/1", Resource{Entries: true, Index: 1000, Width: 1}},
	} {
		got, err := ParsePath(tc.path)
		if err != nil || got != tc.want {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v", tc.path, got, err, tc.want)
			continue
		}
		if got.String() != tc.path {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), tc.path)
		}
	}
}

func TestParsePathRefusesNonCanonicalAndHostilePaths(t *testing.T) {
	for _, p := range []string{
		"", "checkpoint/", "/checkpoint", "tile", "tile/", "tile/0", "tile/0/", "tile/00/000", "tile/-1/000",
		"tile/+1/000", "tile/64/000", "tile/0/0", "tile/0/0000", "tile/0/x000/001", "tile/0/001/002",
		"tile/0/x1/000", "tile/0/x001/", "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/017",
		"tile/0/000.p/", "tile/0/000.p/1/2", "tile/0/000.p", "tile/0/../000", "tile/0/./000",
		"tile/0/x018/x446/x744/x073/x709/x551/616", "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
		"tile/entries/", "tile/entry/000", "tile/0/0a0", "tile/0/ 00", "tile/1e1/000",
		"tile/0/" + strings.Repeat("x001/", 40) + "000",
	} {
		if r, err := ParsePath(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("ParsePath(%q) = %+v, %v; want ErrBadPath", p, r, err)
		}
	}
}

// The path encoding agrees with tessera's, an independent implementation.
func TestResourcePathMatchesTessera(t *testing.T) {
	for _, n := range []uint64{0, 1, 999, 1000, 1001, 123456789, 1 << 40, ^uint64(0) >> 8} {
		for _, w := range []int{1, 255, 256} {
			p := uint8(w % 256)
			for _, l := range []uint8{0, 1, 7} {
				if got, want := (Resource{Level: l, Index: n, Width: w}).String(), layout.TilePath(uint64(l), n, p); got != want {
					t.Errorf("tile %d/%d width %d: %q, tessera says %q", l, n, w, got, want)
				}
			}
			if got, want := (Resource{Entries: true, Index: n, Width: w}).String(), layout.EntriesPath(n, p); got != want {
				t.Errorf("bundle %d width %d: %q, tessera says %q", n, w, got, want)
			}
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"checkpoint", "tile/0/000", "tile/1/x001/234.p/5", "tile/entries/x999/000", "tile/0/x000/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := ParsePath(p)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("ParsePath(%q): %v does not wrap ErrBadPath", p, err)
			}
			return
		}
		if r.String() != p {
			t.Fatalf("ParsePath(%q) = %+v, which prints as %q: only canonical paths may parse", p, r, r.String())
		}
		if r.Checkpoint && r != (Resource{Checkpoint: true}) ||
			!r.Checkpoint && (r.Width < 1 || r.Width > TileWidth || r.Level > maxTileLevel || r.Entries && r.Level != 0) {
			t.Fatalf("ParsePath(%q) = %+v: out of range", p, r)
		}
	})
}
