package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// run builds every selected image for every platform and writes one OCI
// layout per image under o.out, printing "name digest" per image to stdout.
func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	specs, err := selectSpecs(o.only)
	if err != nil {
		return err
	}
	ca, err := readCACerts(o.caCerts)
	if err != nil {
		return err
	}
	base, err := layer(baseEntries(ca), o.created)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "castellan-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	imgs := make(map[string][]v1.Image, len(specs))
	for _, p := range o.platforms {
		fmt.Fprintf(stderr, "image: building %d binaries for %s\n", len(specs), p)
		dir := filepath.Join(work, p.os+"-"+p.arch)
		if err := buildBinaries(ctx, o, p, specs, dir); err != nil {
			return err
		}
		for _, s := range specs {
			bin, err := os.ReadFile(filepath.Join(dir, s.bin))
			if err != nil {
				return err
			}
			img, err := image(o, s, p, base, bin)
			if err != nil {
				return err
			}
			imgs[s.name] = append(imgs[s.name], img)
		}
	}
	for _, s := range specs {
		idx := index(o.platforms, imgs[s.name])
		if err := writeLayout(filepath.Join(o.out, s.name), o.version, idx); err != nil {
			return err
		}
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", s.name, d)
	}
	return nil
}
