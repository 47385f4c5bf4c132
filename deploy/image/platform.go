package main

import (
	"fmt"
	"strings"
)

// platform is one os/arch an image is built for.
type platform struct{ os, arch string }

func (p platform) String() string { return p.os + "/" + p.arch }

// supported are the platforms the images are built for: the Go toolchain
// cross-compiles to them with CGO_ENABLED=0.
var supported = map[string]bool{"linux/amd64": true, "linux/arm64": true}

func parsePlatforms(s string) ([]platform, error) {
	var out []platform
	seen := map[string]bool{}
	for _, p := range strings.Split(s, ",") {
		if !supported[p] {
			return nil, fmt.Errorf("--platforms: %q is not supported; use linux/amd64 and/or linux/arm64", p)
		}
		if seen[p] {
			return nil, fmt.Errorf("--platforms: %q given twice", p)
		}
		seen[p] = true
		os, arch, _ := strings.Cut(p, "/")
		out = append(out, platform{os: os, arch: arch})
	}
	return out, nil
}
