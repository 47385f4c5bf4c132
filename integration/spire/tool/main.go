// Command spire-agent is SPIRE's own agent CLI (github.com/spiffe/spire
// v1.13.3, unmodified), built here so that Castellan's interop tests can run
// "spire-agent api fetch x509" against castellan-agent's Workload API socket.
// It lives in its own module so that SPIRE never enters Castellan's go.mod;
// build it with build.sh.
package main

import (
	"os"

	"github.com/spiffe/spire/cmd/spire-agent/cli"
	"github.com/spiffe/spire/pkg/common/entrypoint"
)

func main() {
	os.Exit(entrypoint.NewEntryPoint(new(cli.CLI).Run).Main())
}
