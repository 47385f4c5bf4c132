package main

import (
	"fmt"
	"io"
	"runtime"
)

// version and commit are set at link time by the image builder
// (-X main.version=... -X main.commit=...); a plain go build says "devel".
var (
	version = "devel"
	commit  = "unknown"
)

// printVersion prints "castellan-agent <version> (commit <commit>, <go>, <os>/<arch>)"
// to w and reports true when args is exactly --version; otherwise it prints
// nothing and reports false.
func printVersion(args []string, w io.Writer) bool {
	if len(args) != 1 || (args[0] != "--version" && args[0] != "-version") {
		return false
	}
	fmt.Fprintf(w, "castellan-agent %s (commit %s, %s, %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return true
}
