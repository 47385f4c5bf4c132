package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// labels are the org.opencontainers.image.* labels of s's image.
func labels(o options, s spec) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       s.name,
		"org.opencontainers.image.description": s.title,
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.revision":    o.revision,
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.created":     o.created.Format("2006-01-02T15:04:05Z"),
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// image assembles s's image for p from the shared base layer and the
// binary: user 65532, the binary as entrypoint, the fixed created time.
func image(o options, s spec, p platform, base v1.Layer, bin []byte) (v1.Image, error) {
	app, err := layer(binaryEntries(s.bin, bin), o.created)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.created}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "castellan deploy/image: /etc/passwd, /etc/group, CA certificates"}},
		mutate.Addendum{Layer: app, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "castellan deploy/image: go build " + s.pkg}},
	)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", s.name, p, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", s.name, p, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = p.os, p.arch, created
	cf.Config = v1.Config{
		User:       strconv.Itoa(nonrootUID) + ":" + strconv.Itoa(nonrootGID),
		Entrypoint: []string{binDir + "/" + s.bin},
		Env:        []string{"PATH=" + binDir},
		WorkingDir: "/",
		Labels:     labels(o, s),
	}
	return mutate.ConfigFile(img, cf)
}

// index is the multi-architecture image index over imgs (one per platform,
// in the order of platforms).
func index(platforms []platform, imgs []v1.Image) v1.ImageIndex {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, img := range imgs {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				MediaType: types.OCIManifestSchema1,
				Platform:  &v1.Platform{OS: platforms[i].os, Architecture: platforms[i].arch},
			},
		})
	}
	return idx
}

// writeLayout replaces dir with an OCI image layout whose only entry is
// idx, tagged (org.opencontainers.image.ref.name) with the version.
func writeLayout(dir, version string, idx v1.ImageIndex) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("layout %s: %w", dir, err)
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,
	}))
}
