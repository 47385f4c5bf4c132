package main

import (
	"context"
	"fmt"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
)

// runToken runs `castellanctl token create --node NAME [--ttl 10m]`. The
// token goes to stdout alone (for scripts); its node and expiry to stderr.
func runToken(ctx context.Context, g *globals, args []string) error {
	_, args, err := subcommand("token", args, "create")
	if err != nil {
		return err
	}
	fs := newFlags(g, "token create")
	node := fs.String("node", "", "node the token is for (required)")
	ttl := fs.Duration("ttl", 10*time.Minute, "how long the token stays usable")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *node == "" || fs.NArg() > 0 {
		return usagef("token create: --node NAME is required and takes no arguments")
	}
	if *ttl <= 0 {
		return usagef("token create: --ttl must be positive")
	}
	conn, err := g.dial(ctx)
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
	fmt.Fprintln(g.stdout, resp.GetToken())
	fmt.Fprintf(g.stderr, "join token for node %s, single use, expires %s\n",
		resp.GetNode(), resp.GetExpiresAt().AsTime().Local().Format(time.RFC3339))
	return nil
}
