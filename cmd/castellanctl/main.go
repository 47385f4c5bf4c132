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
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

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

// usageError is a command-line mistake (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCoder is an error that chooses the process exit code, such as
// *VerificationError (3).
type exitCoder interface {
	error
	ExitCode() int
}

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
	g := &globals{stdout: stdout, stderr: stderr}
	fs := g.flagSet(getenv)
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
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	err := dispatch(ctx, g, fs.Arg(0), fs.Args()[1:])
	var (
		ue *usageError
		ec exitCoder
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

func dispatch(ctx context.Context, g *globals, cmd string, args []string) error {
	switch cmd {
	case "token":
		return runToken(ctx, g, args)
	case "entry":
		return runEntry(ctx, g, args)
	case "agent":
		return runAgent(ctx, g, args)
	case "certs":
		return runCerts(ctx, g, args)
	case "ledger":
		return runLedger(ctx, g, args)
	case "datastore":
		return runDatastore(ctx, g, args)
	case "authority":
		return runAuthority(ctx, g, args)
	default:
		return usagef("unknown command %q; run castellanctl -h", cmd)
	}
}

// subcommand splits args into a subcommand name and its arguments.
func subcommand(cmd string, args []string, known ...string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, usagef("%s: missing subcommand (one of %v)", cmd, known)
	}
	for _, k := range known {
		if args[0] == k {
			return k, args[1:], nil
		}
	}
	return "", nil, usagef("%s: unknown subcommand %q (one of %v)", cmd, args[0], known)
}

// newFlags returns a flag set for a subcommand whose errors are usage errors.
func newFlags(g *globals, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	return fs
}

// parseFlags parses args, turning flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%s: %v", fs.Name(), err)
	}
	return nil
}

// defaultTimeout bounds one command.
const defaultTimeout = 30 * time.Second

// DefaultAdminSocket is where castellan-server listens with its default
// --data-dir.
const DefaultAdminSocket = "/var/lib/castellan/admin.sock"

// globals are the flags every command shares: how to reach the server.
type globals struct {
	adminSocket string
	server      string
	cert, key   string
	bundle      string
	timeout     time.Duration
	stdout      io.Writer
	stderr      io.Writer
}

func (g *globals) flagSet(getenv func(string) string) *flag.FlagSet {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("castellanctl", flag.ContinueOnError)
	fs.StringVar(&g.adminSocket, "admin-socket", env("CASTELLAN_ADMIN_SOCKET", DefaultAdminSocket),
		"admin Unix socket of the server (env CASTELLAN_ADMIN_SOCKET)")
	fs.StringVar(&g.server, "server", env("CASTELLAN_SERVER", ""),
		"server address HOST:PORT for mTLS with an admin SVID instead of the socket (env CASTELLAN_SERVER)")
	fs.StringVar(&g.cert, "cert", env("CASTELLAN_CERT", ""), "admin SVID certificate chain PEM (with --server)")
	fs.StringVar(&g.key, "key", env("CASTELLAN_KEY", ""), "admin SVID private key PEM (with --server)")
	fs.StringVar(&g.bundle, "bundle", env("CASTELLAN_BUNDLE", ""), "trust bundle PEM to verify the server (with --server)")
	fs.DurationVar(&g.timeout, "timeout", defaultTimeout, "time limit for the command")
	return fs
}

// dial connects to the admin API: over mutual TLS when --server is set,
// through the admin socket otherwise. The caller closes the connection.
func (g *globals) dial(ctx context.Context) (*grpc.ClientConn, error) {
	if g.server == "" {
		path, err := filepath.Abs(g.adminSocket)
		if err != nil {
			return nil, fmt.Errorf("castellanctl: admin socket: %w", err)
		}
		return grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if g.cert == "" || g.key == "" || g.bundle == "" {
		return nil, usagef("--server needs --cert, --key and --bundle")
	}
	tc, err := g.mtlsConfig()
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(g.server, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

// mtlsConfig presents the admin SVID and accepts only the CA server's SVID
// (spiffe://<td>/castellan/server) of the admin's trust domain.
func (g *globals) mtlsConfig() (*tls.Config, error) {
	svid, err := x509svid.Load(g.cert, g.key)
	if err != nil {
		return nil, fmt.Errorf("castellanctl: admin SVID: %w", err)
	}
	td := svid.ID.TrustDomain()
	bundle, err := x509bundle.Load(td, g.bundle)
	if err != nil {
		return nil, fmt.Errorf("castellanctl: trust bundle: %w", err)
	}
	serverID, err := spiffeid.FromPath(td, "/castellan/server")
	if err != nil {
		return nil, fmt.Errorf("castellanctl: server ID: %w", err)
	}
	return tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(serverID)), nil
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
