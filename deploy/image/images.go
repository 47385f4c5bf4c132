package main

import (
	"fmt"
	"slices"
)

// spec is one image: a Go main package installed as the entrypoint.
type spec struct {
	name  string // image name, e.g. castellan-server
	pkg   string // Go package path, relative to the module root
	bin   string // file name of the binary under binDir
	title string // org.opencontainers.image.title / description
}

// binDir is where the binary sits in every image.
const binDir = "/usr/local/bin"

// allSpecs are the images "make images" builds: the three shipped binaries
// and the four Go Bookinfo services (the no-Envoy demo).
var allSpecs = []spec{
	{"castellan-server", "./cmd/castellan-server", "castellan-server", "Castellan SPIFFE certificate authority"},
	{"castellan-agent", "./cmd/castellan-agent", "castellan-agent", "Castellan node agent (SDS and SPIFFE Workload API)"},
	{"castellanctl", "./cmd/castellanctl", "castellanctl", "Castellan operator and audit CLI"},
	{"castellan-bookinfo-productpage", "./integration/bookinfo/productpage", "productpage", "Bookinfo productpage (Go, mTLS through the Castellan agent)"},
	{"castellan-bookinfo-details", "./integration/bookinfo/details", "details", "Bookinfo details (Go, mTLS through the Castellan agent)"},
	{"castellan-bookinfo-reviews", "./integration/bookinfo/reviews", "reviews", "Bookinfo reviews (Go, mTLS through the Castellan agent)"},
	{"castellan-bookinfo-ratings", "./integration/bookinfo/ratings", "ratings", "Bookinfo ratings (Go, mTLS through the Castellan agent)"},
}

// selectSpecs returns the specs named in only (all when only is empty).
func selectSpecs(only []string) ([]spec, error) {
	if len(only) == 0 {
		return allSpecs, nil
	}
	var out []spec
	for _, name := range only {
		i := slices.IndexFunc(allSpecs, func(s spec) bool { return s.name == name })
		if i < 0 {
			return nil, fmt.Errorf("--only: no image %q", name)
		}
		out = append(out, allSpecs[i])
	}
	return out, nil
}
