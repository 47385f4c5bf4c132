// Package tokencmd holds castellanctl's token command group: token create,
// which makes a one-time join token and hands it over on stdout or in a new
// owner-only file.
package tokencmd

import (
	"context"
	"fmt"
	"os"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
)

// Run runs `castellanctl token create --node NAME [--ttl 10m] [--out
// FILE]`. The token goes to stdout alone (for scripts), or with --out to a
// new file created 0600 (never overwritten) for castellan-agent
// --join-token-file; its node and expiry to stderr.
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	_, args, err := cli.Subcommand("token", args, "create")
	if err != nil {
		return err
	}
	fs := g.NewFlags("token create")
	node := fs.String("node", "", "node the token is for (required)")
	ttl := fs.Duration("ttl", 10*time.Minute, "how long the token stays usable")
	outFile := fs.String("out", "", "write the token to this new file (mode 0600, refused if it exists) instead of stdout; give it to castellan-agent --join-token-file")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if *node == "" || fs.NArg() > 0 {
		return cli.Usagef("token create: --node NAME is required and takes no arguments")
	}
	if *ttl <= 0 {
		return cli.Usagef("token create: --ttl must be positive")
	}
	conn, err := g.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminv1.NewAdminServiceClient(conn).CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{
		Node: *node, TtlSeconds: int64(ttl.Round(time.Second) / time.Second),
	})
	if err != nil {
		return err
	}
	if *outFile == "" {
		fmt.Fprintln(g.Stdout, resp.GetToken())
	} else if err := writeTokenFile(*outFile, resp.GetToken()); err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "join token for node %s, single use, expires %s\n",
		resp.GetNode(), resp.GetExpiresAt().AsTime().Local().Format(time.RFC3339))
	return nil
}

// writeTokenFile writes token to a new file at path, mode 0600; an
// existing file (or symlink) is refused rather than overwritten.
func writeTokenFile(path, token string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("token create: --out: %w (the file must not exist; the token was created but not saved, create another)", err)
	}
	_, err = f.WriteString(token + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("token create: --out: %w", err)
	}
	return nil
}
