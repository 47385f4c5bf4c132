package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Nonroot is the only user of the images (distroless' convention).
const (
	nonrootUID = 65532
	nonrootGID = 65532
)

// entry is one file or directory of a layer.
type entry struct {
	path string // without a leading slash
	mode int64
	data []byte // nil for a directory
}

// baseEntries is the root file system every image shares: the users and
// the CA certificates, nothing else (no shell, no package database).
func baseEntries(caCerts []byte) []entry {
	passwd := "root:x:0:0:root:/:/sbin/nologin\n" +
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/:/sbin/nologin\n", nonrootUID, nonrootGID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonrootGID)
	return []entry{
		{path: "etc/", mode: 0o755},
		{path: "etc/group", mode: 0o644, data: []byte(group)},
		{path: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{path: "etc/ssl/", mode: 0o755},
		{path: "etc/ssl/certs/", mode: 0o755},
		{path: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: caCerts},
	}
}

// binaryEntries is the layer holding one binary at binDir/name.
func binaryEntries(name string, bin []byte) []entry {
	return []entry{
		{path: "usr/", mode: 0o755},
		{path: "usr/local/", mode: 0o755},
		{path: "usr/local/bin/", mode: 0o755},
		{path: "usr/local/bin/" + name, mode: 0o755, data: bin},
	}
}

// layer writes entries as a tar stream in the given order with every time
// set to mtime and every owner root, so that the same inputs always give
// the same bytes, and wraps it as a gzip-compressed OCI layer.
func layer(entries []entry, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.path, Mode: e.mode, ModTime: mtime, Format: tar.FormatPAX,
			Typeflag: tar.TypeReg, Size: int64(len(e.data)),
		}
		if e.data == nil {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", e.path, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", e.path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// readCACerts reads the build machine's CA certificates, refusing an empty
// or non-PEM file (an image without roots cannot verify anything).
func readCACerts(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-certificates: %w", err)
	}
	if !bytes.Contains(b, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("--ca-certificates %s holds no PEM certificate", path)
	}
	return b, nil
}
