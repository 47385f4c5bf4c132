// Command castellanctl administers a Castellan CA: join tokens,
// registration entries, node agents and bans, the CA's authorities
// (rotation), and (certs, ledger) the issuance ledger.
//
// It reaches the server through the owner-only admin Unix socket in the
// server's data directory (--admin-socket), or over mutual TLS with an admin
// SVID (--server, --cert, --key, --bundle). Exit codes: 0 success, 1 error,
// 2 usage error, 3 ledger verification failed (the log was altered, or a
// checkpoint or proof is wrong), 4 an authority transition refused as
// unsafe (castellanctl authority ...); ledger monitor adds 5 log fork or
// rollback, 6 damaged monitor state file, 7 a response over its size or
// time limit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/agentcmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/authoritycmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/certscmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/datastorecmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/entrycmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/ledgercmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/tokencmd"
	"github.com/castellan-dev/castellan/internal/version"
)

const usage = `usage: castellanctl [global flags] <command> [flags]

commands:
  token create --node NAME [--ttl 10m] [--out FILE]
                                            create a one-time join token (FILE: written 0600,
                                            for castellan-agent --join-token-file)
  entry create --spiffe-id ID --node NODE --selector TYPE:KEY:VALUE... [--ttl D] [--allow-any-user] [-o json]
                                            unix entries must select unix:uid or unix:gid;
                                            --allow-any-user accepts path/sha256 alone
  entry list [--node NODE] [-o table|json]  list registration entries
  entry delete ID                           delete a registration entry
  agent list|show|ban|unban                 node agents and node bans (castellanctl agent -h)
  certs ...                                 issued certificates (audit)
  ledger ...                                the issuance ledger (audit); ledger keygen --out FILE
                                            makes the log key replicas on PostgreSQL share;
                                            ledger monitor follows the log over HTTP and
                                            prints certificates matching a filter
  datastore migrate --data-dir DIR --to-file DSNFILE
                                            copy a stopped bbolt CA into an empty PostgreSQL
  authority list|prepare|activate|taint|revoke
                                            the CA's authorities and their rotation
                                            (castellanctl authority -h)

security notes:
  unix entries      an entry that selects only unix:path/unix:sha256 is an identity any
                    local user can take by running that binary; select unix:uid or
                    unix:gid (--allow-any-user opts out, with a warning)
  join tokens       give the agent its token with --join-token-file or
                    CASTELLAN_AGENT_JOIN_TOKEN, never on its command line; a second use
                    of a token is refused and counted as a possible theft
  stolen agent key  castellanctl agent ban NODE cuts off every certificate of the node,
                    past and future; certs revoke SERIAL --with-descendants revokes a
                    renewal lineage
  quotas            the CA limits issuance per node and per identity (castellan-server
                    --quota-node-burst, --quota-node-per-hour, --quota-identity-per-ttl)
                    and stops issuing below --ledger-disk-reserve; refusals are
                    ResourceExhausted / Unavailable with the reason and when to retry

global flags:
`

func main() {
	if version.Print("castellanctl", os.Args[1:], os.Stdout) {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run executes one command and returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	g := &cli.Globals{Stdout: stdout, Stderr: stderr}
	fs := g.FlagSet(getenv)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	err := dispatch(ctx, g, fs.Arg(0), fs.Args()[1:])
	var (
		ue *cli.UsageError
		ec cli.ExitCoder
	)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "castellanctl:", err)
		return 2
	case errors.As(err, &ec) && ec.ExitCode() != 0:
		fmt.Fprintln(stderr, err)
		return ec.ExitCode()
	default:
		fmt.Fprintln(stderr, describe(err))
		return 1
	}
}

// dispatch is the command table: it runs the command group cmd.
func dispatch(ctx context.Context, g *cli.Globals, cmd string, args []string) error {
	switch cmd {
	case "token":
		return tokencmd.Run(ctx, g, args)
	case "entry":
		return entrycmd.Run(ctx, g, args)
	case "agent":
		return agentcmd.Run(ctx, g, args)
	case "certs":
		return certscmd.Run(ctx, g, args)
	case "ledger":
		return ledgercmd.Run(ctx, g, args)
	case "datastore":
		return datastorecmd.Run(ctx, g, args)
	case "authority":
		return authoritycmd.Run(ctx, g, args)
	default:
		return cli.Usagef("unknown command %q; run castellanctl -h", cmd)
	}
}

// describe turns an RPC error into a message for the terminal.
func describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		return "castellanctl: cannot reach the server (" + st.Message() + "); is castellan-server running, and is --admin-socket or --server right?"
	case codes.DeadlineExceeded:
		return "castellanctl: the server did not answer in time (--timeout)"
	default:
		return fmt.Sprintf("castellanctl: %s: %s", st.Code(), st.Message())
	}
}
