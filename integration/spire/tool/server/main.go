// Command spire-server is SPIRE's own server (github.com/spiffe/spire
// v1.13.3, unmodified), built here so that "make bench-compare" can measure
// Castellan and SPIRE side by side on the same machine with equal settings.
// It is its own module (so SPIRE never enters Castellan's go.mod); build it
// with ../build-server.sh. It is never built by
// "make test": the first build takes about 15 minutes on a 2-core machine.
package main

import (
	"os"

	"github.com/spiffe/spire/cmd/spire-server/cli"
	"github.com/spiffe/spire/pkg/common/entrypoint"
)

func main() {
	os.Exit(entrypoint.NewEntryPoint(new(cli.CLI).Run).Main())
}
