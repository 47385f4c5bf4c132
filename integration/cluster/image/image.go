package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// importPause builds the pause image and imports it as PauseImage.
func (c *Cluster) importPause(ctx context.Context) error {
	return c.importGoImage(ctx, "./integration/cluster/pause", PauseImage)
}

// ImportGoBinary builds the Go command at pkg (a path relative to the
// repository root, e.g. "./integration/bookinfo/ratings") as a static
// binary, packs it alone into an image whose entrypoint it is
// (/<command name>) and imports it into the cluster's containerd as ref.
// Pods use it with imagePullPolicy Never or IfNotPresent.
func (c *Cluster) ImportGoBinary(pkg, ref string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := c.importGoImage(ctx, pkg, ref); err != nil {
		c.t.Fatalf("cluster: image %s: %v", ref, err)
	}
}

func (c *Cluster) importGoImage(ctx context.Context, pkg, ref string) error {
	dir, err := os.MkdirTemp(c.paths.dir, "image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, filepath.Base(pkg))
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, pkg)
	build.Dir = testbin.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	img, err := binaryImage(bin)
	if err != nil {
		return err
	}
	return c.importImage(img, ref, dir)
}

// binaryImage is an image of one file, the entrypoint, at /<base name>.
func binaryImage(bin string) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	name := filepath.Base(bin)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{"/" + name}
	return mutate.ConfigFile(img, cf)
}

// ImportLayout imports the image for this machine's platform from an OCI
// image layout written by deploy/image ("make images": one multi-platform
// index per layout) into the cluster's containerd as ref.
func (c *Cluster) ImportLayout(layoutDir, ref string) {
	c.t.Helper()
	if err := c.importLayout(layoutDir, ref); err != nil {
		c.t.Fatalf("cluster: importing %s as %s: %v", layoutDir, ref, err)
	}
}

func (c *Cluster) importLayout(layoutDir, ref string) error {
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		return err
	}
	img, err := platformImage(idx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(c.paths.dir, "image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	return c.importImage(img, ref, dir)
}

// platformImage finds linux/GOARCH in idx, descending into nested indexes
// (a layout's index.json points to the image's multi-platform index).
func platformImage(idx v1.ImageIndex) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err := platformImage(child); err == nil {
				return img, nil
			}
		case d.MediaType.IsImage() && (d.Platform == nil || d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH):
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no linux/%s image in the index", runtime.GOARCH)
}

// importImage writes img as an image tarball tagged ref into dir and
// imports it with ctr into the k8s.io namespace (where the CRI plugin
// looks), unpacked for the overlayfs snapshotter.
func (c *Cluster) importImage(img v1.Image, ref, dir string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	file := filepath.Join(dir, "image.tar")
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		return err
	}
	_, err = c.ctr(5*time.Minute, "images", "import", file)
	return err
}
