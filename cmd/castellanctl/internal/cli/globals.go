// Package cli holds what every castellanctl command shares: the global
// flags and how they reach the server (the admin socket, or mutual TLS with
// an admin SVID), usage errors and exit codes, the parsing of subcommands,
// flags and positional arguments, and the output formats (-o table|json).
// The command groups live in sibling packages; package main holds the
// command table.
package cli

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
)

// DefaultTimeout bounds one command.
const DefaultTimeout = 30 * time.Second

// DefaultAdminSocket is where castellan-server listens with its default
// --data-dir.
const DefaultAdminSocket = "/var/lib/castellan/admin.sock"

// Globals are the flags every command shares (how to reach the server)
// and where a command writes.
type Globals struct {
	adminSocket string
	server      string
	cert, key   string
	bundle      string
	// Timeout bounds the command (--timeout).
	Timeout time.Duration
	// Stdout receives the command's output, Stderr its warnings and usage.
	Stdout, Stderr io.Writer
}

// FlagSet returns the global flag set writing into g, whose defaults come
// from the environment (getenv).
func (g *Globals) FlagSet(getenv func(string) string) *flag.FlagSet {
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
	fs.DurationVar(&g.Timeout, "timeout", DefaultTimeout, "time limit for the command")
	return fs
}

// Dial connects to the admin API: over mutual TLS when --server is set,
// through the admin socket otherwise. The caller closes the connection.
func (g *Globals) Dial(ctx context.Context) (*grpc.ClientConn, error) {
	if g.server == "" {
		path, err := filepath.Abs(g.adminSocket)
		if err != nil {
			return nil, fmt.Errorf("castellanctl: admin socket: %w", err)
		}
		return grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if g.cert == "" || g.key == "" || g.bundle == "" {
		return nil, Usagef("--server needs --cert, --key and --bundle")
	}
	tc, err := g.mtlsConfig()
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(g.server, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

// mtlsConfig presents the admin SVID and accepts only the CA server's SVID
// (spiffe://<td>/castellan/server) of the admin's trust domain.
func (g *Globals) mtlsConfig() (*tls.Config, error) {
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

// AdminClient dials the server and returns an admin client and a closer.
func (g *Globals) AdminClient(ctx context.Context) (adminv1.AdminServiceClient, func(), error) {
	conn, err := g.Dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	return adminv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

// AuditClient dials the server and returns an audit client and a closer.
func (g *Globals) AuditClient(ctx context.Context) (auditv1.AuditServiceClient, func(), error) {
	conn, err := g.Dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	return auditv1.NewAuditServiceClient(conn), func() { conn.Close() }, nil
}
