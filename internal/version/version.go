// Package version holds the build's version and commit, set at link time by
// the image builder (deploy/image) with
// -X github.com/castellan-dev/castellan/internal/version.Version=...
// -X github.com/castellan-dev/castellan/internal/version.Commit=...;
// a plain go build says "devel".
package version

import (
	"fmt"
	"io"
	"runtime"
)

// Set at link time; see the package doc.
var (
	Version = "devel"
	Commit  = "unknown"
)

// Print prints "<name> <version> (commit <commit>, <go>, <os>/<arch>)" to w
// and reports true when args is exactly --version (or -version); otherwise
// it prints nothing and reports false.
func Print(name string, args []string, w io.Writer) bool {
	if len(args) != 1 || (args[0] != "--version" && args[0] != "-version") {
		return false
	}
	fmt.Fprintf(w, "%s %s (commit %s, %s, %s/%s)\n", name, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return true
}
