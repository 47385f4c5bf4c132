package cluster

import (
	"context"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/castellan-dev/castellan/integration/cluster/image"
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
	img, err := image.Go(ctx, pkg, dir)
	if err != nil {
		return err
	}
	return c.importImage(img, ref, dir)
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
	img, err := image.Layout(layoutDir)
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

// importImage writes img as an image tarball tagged ref into dir and
// imports it with ctr into the k8s.io namespace (where the CRI plugin
// looks), unpacked for the overlayfs snapshotter.
func (c *Cluster) importImage(img v1.Image, ref, dir string) error {
	file := filepath.Join(dir, "image.tar")
	if err := image.WriteTarball(img, ref, file); err != nil {
		return err
	}
	_, err := c.ctr(5*time.Minute, "images", "import", file)
	return err
}
