package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestGoImageHoldsOnlyTheBinary builds the pause command and checks the
// image: linux on this architecture, one layer holding the built binary
// alone, executable, as the entrypoint; and that WriteTarball writes an
// image tarball with that image under the tag.
func TestGoImageHoldsOnlyTheBinary(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := Go(ctx, "./integration/cluster/pause", dir)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/pause" {
		t.Fatalf("config: %s/%s entrypoint %q, want linux/%s [/pause]", cf.OS, cf.Architecture, cf.Config.Entrypoint, runtime.GOARCH)
	}
	want, err := os.ReadFile(filepath.Join(dir, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	files := layerFiles(t, img)
	if len(files) != 1 || !bytes.Equal(files["pause"], want) {
		t.Fatalf("the image holds %d files, want only pause, the built binary", len(files))
	}

	file := filepath.Join(dir, "image.tar")
	if err := WriteTarball(img, "castellan.test/pause:v1", file); err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, err := back.Digest()
	if err != nil || d1 != d2 {
		t.Fatalf("the tarball's image is %v (%v), want %v", d2, err, d1)
	}
	if err := WriteTarball(img, "Not A Tag!", file); err == nil {
		t.Fatal("WriteTarball accepted an invalid reference")
	}
}

// layerFiles returns the files of img's layers, by name, failing t on any
// entry that is not an executable regular file.
func layerFiles(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			if h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 {
				t.Fatalf("layer entry %s: type %c mode %o, want an executable file", h.Name, h.Typeflag, h.Mode)
			}
			files[h.Name] = b
		}
		rc.Close()
	}
	return files
}

// TestLayoutPicksThisMachinesImage writes a layout as deploy/image does
// (index.json pointing to a multi-platform index) and checks that Layout
// returns the image for this machine, and refuses a layout without one.
func TestLayoutPicksThisMachinesImage(t *testing.T) {
	other := "s390x"
	if runtime.GOARCH == other {
		other = "arm64"
	}
	ours, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	multi := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: ours, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	dir := t.TempDir()
	if _, err := layout.Write(dir, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: multi})); err != nil {
		t.Fatal(err)
	}
	img, err := Layout(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := img.Digest()
	want, _ := ours.Digest()
	if got != want {
		t.Fatalf("Layout picked %v, want this machine's image %v", got, want)
	}

	only := t.TempDir()
	foreign := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}})
	if _, err := layout.Write(only, foreign); err != nil {
		t.Fatal(err)
	}
	if _, err := Layout(only); err == nil || !strings.Contains(err.Error(), "no linux/"+runtime.GOARCH+" image") {
		t.Fatalf("Layout of a foreign-only layout = %v, want an error naming the missing platform", err)
	}
}
