package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

const modulePath = "github.com/castellan-dev/castellan"

// castellanCommands are built from ./cmd/<name>; bookinfoServices from
// ./integration/bookinfo/<name>.
var (
	castellanCommands = []string{"castellan-server", "castellan-agent", "castellanctl"}
	bookinfoServices  = []string{"productpage", "details", "reviews", "ratings"}
)

// binaries holds the absolute path of every executable the demo runs.
type binaries struct {
	server, agent, ctl string
	bookinfo           map[string]string
}

// findBinaries takes each binary from binDir (castellan commands in binDir,
// Bookinfo services in binDir/bookinfo) when it is there, and builds the
// missing ones with `go build` into buildDir (and buildDir/bookinfo).
func findBinaries(ctx context.Context, binDir, buildDir string) (binaries, error) {
	paths := map[string]string{}
	var missingCmds, missingSvcs []string
	look := func(dir, name string) bool {
		if binDir == "" {
			return false
		}
		p, err := filepath.Abs(filepath.Join(dir, name))
		if err != nil {
			return false
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			paths[name] = p
			return true
		}
		return false
	}
	for _, c := range castellanCommands {
		if !look(binDir, c) {
			missingCmds = append(missingCmds, c)
		}
	}
	for _, s := range bookinfoServices {
		if !look(filepath.Join(binDir, "bookinfo"), s) {
			missingSvcs = append(missingSvcs, s)
		}
	}
	if err := build(ctx, buildDir, "cmd", missingCmds, paths); err != nil {
		return binaries{}, err
	}
	if err := build(ctx, filepath.Join(buildDir, "bookinfo"), "integration/bookinfo", missingSvcs, paths); err != nil {
		return binaries{}, err
	}
	b := binaries{server: paths["castellan-server"], agent: paths["castellan-agent"], ctl: paths["castellanctl"], bookinfo: map[string]string{}}
	for _, s := range bookinfoServices {
		b.bookinfo[s] = paths[s]
	}
	return b, nil
}

// build compiles modulePath/<parent>/<name> for every name into dir with one
// `go build`, which must run inside the module (make demo runs from the
// repository root).
func build(ctx context.Context, dir, parent string, names []string, paths map[string]string) error {
	if len(names) == 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("castellan-demo: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("castellan-demo: %w", err)
	}
	args := []string{"build", "-o", abs + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, modulePath+"/"+parent+"/"+n)
	}
	fmt.Printf("building %v into %s ...\n", names, abs)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("castellan-demo: go build %v (run the demo from the repository root, or pass --bin): %w", names, err)
	}
	for _, n := range names {
		paths[n] = filepath.Join(abs, n)
	}
	return nil
}
