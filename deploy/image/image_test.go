package main

import (
	"archive/tar"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func testOptions(t *testing.T) options {
	t.Helper()
	o, err := parseFlags([]string{"--version", "v1.2.3", "--revision", "abc"}, func(k string) string {
		if k == "SOURCE_DATE_EPOCH" {
			return "1767225600"
		}
		return ""
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestParseFlagsRefusesWhatWouldMakeAnUnreproducibleImage(t *testing.T) {
	env := func(string) string { return "" }
	for _, args := range [][]string{
		{"--revision", "abc", "--created", "1"},                      // no version
		{"--version", "v1", "--created", "1"},                        // no revision
		{"--version", "v1", "--revision", "abc"},                     // no created, no SOURCE_DATE_EPOCH
		{"--version", "v1", "--revision", "abc", "--created", "now"}, // not Unix seconds
		{"--version", "v1", "--revision", "abc", "--created", "-5"},  // negative
		{"--version", "v1", "--revision", "abc", "--created", "1", "--platforms", "linux/s390x"},
		{"--version", "v1", "--revision", "abc", "--created", "1", "--platforms", "linux/amd64,linux/amd64"},
		{"--version", "v1", "--revision", "abc", "--created", "1", "extra"},
	} {
		if _, err := parseFlags(args, env, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	if _, err := selectSpecs([]string{"castellan-nope"}); err == nil {
		t.Error("selectSpecs accepted an unknown image")
	}
}

func digest(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestLayerIsDeterministic(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
	at := time.Unix(1767225600, 0)
	a, err := layer(baseEntries(ca), at)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := layer(baseEntries(ca), at)
	c, _ := layer(baseEntries(ca), at.Add(time.Second))
	if digest(t, a) != digest(t, b) {
		t.Error("the same entries gave two layer digests")
	}
	if digest(t, a) == digest(t, c) {
		t.Error("a different time gave the same digest: times are not in the layer")
	}
	rc, err := a.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(at) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" {
			t.Errorf("%s: time %v owner %d:%d %q", h.Name, h.ModTime, h.Uid, h.Gid, h.Uname)
		}
	}
}

func TestImageConfigIsNonrootWithEntrypointAndLabels(t *testing.T) {
	o := testOptions(t)
	s := allSpecs[0]
	base, err := layer(baseEntries([]byte("-----BEGIN CERTIFICATE-----\n")), o.created)
	if err != nil {
		t.Fatal(err)
	}
	var imgs []v1.Image
	for _, p := range o.platforms {
		img, err := image(o, s, p, base, []byte("\x7fELF fake "+p.arch))
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	cf, err := imgs[1].ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || cf.Architecture != "arm64" || cf.Config.Entrypoint[0] != "/usr/local/bin/castellan-server" {
		t.Errorf("config: user %q arch %q entrypoint %q", cf.Config.User, cf.Architecture, cf.Config.Entrypoint)
	}
	if cf.Config.Labels["org.opencontainers.image.created"] != "2026-01-01T00:00:00Z" || cf.Config.Labels["org.opencontainers.image.revision"] != "abc" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	im, err := index(o.platforms, imgs).IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 || im.Manifests[0].Platform.Architecture != "amd64" || im.Manifests[1].Platform.Architecture != "arm64" {
		t.Errorf("index manifests %+v", im.Manifests)
	}
	if !strings.Contains(string(im.MediaType), "oci.image.index") {
		t.Errorf("index media type %s, want OCI", im.MediaType)
	}
}
