package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// buildBinaries builds the binaries of specs for p into dir (one file per
// spec, named spec.bin) as static, reproducible executables.
func buildBinaries(ctx context.Context, o options, p platform, specs []spec, dir string) error {
	ldflags := strings.Join([]string{
		"-s", "-w", "-buildid=",
		"-X", versionPkg + ".Version=" + o.version,
		"-X", versionPkg + ".Commit=" + o.revision,
	}, " ")
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=" + ldflags, "-o", dir + string(filepath.Separator)}
	for _, s := range specs {
		args = append(args, s.pkg)
	}
	cmd := exec.CommandContext(ctx, o.goCmd, args...)
	// No C: the binaries must run on a root file system without libc. A
	// developer's GOFLAGS (e.g. -race, -tags) must not leak into images.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.os, "GOARCH="+p.arch, "GOFLAGS=-mod=readonly", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", p, err, stderr.String())
	}
	for _, s := range specs {
		if _, err := os.Stat(filepath.Join(dir, s.bin)); err != nil {
			return fmt.Errorf("go build for %s produced no %s: %w", p, s.bin, err)
		}
	}
	return nil
}

// versionPkg is the package whose Version and Commit the link sets.
const versionPkg = "github.com/castellan-dev/castellan/internal/version"
