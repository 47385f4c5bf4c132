// Package entrycmd holds castellanctl's entry command group: registration
// entries (create, list, delete) over the admin API.
package entrycmd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
)

// Run runs `castellanctl entry create|list|delete`.
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	sub, args, err := cli.Subcommand("entry", args, "create", "list", "delete")
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		return entryCreate(ctx, g, args)
	case "list":
		return entryList(ctx, g, args)
	default:
		return entryDelete(ctx, g, args)
	}
}

// selectorFlag collects repeated --selector TYPE:KEY:VALUE flags.
type selectorFlag []*cav1.Selector

func (s *selectorFlag) String() string { return fmt.Sprint(len(*s), " selectors") }

func (s *selectorFlag) Set(v string) error {
	sel, err := authz.ParseSelector(v)
	if err != nil {
		return err
	}
	*s = append(*s, sel)
	return nil
}

func entryCreate(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("entry create")
	id := fs.String("spiffe-id", "", "SPIFFE ID to assign (required)")
	node := fs.String("node", "", "node whose agent may obtain it (required)")
	var sels selectorFlag
	fs.Var(&sels, "selector", "workload selector TYPE:KEY:VALUE, e.g. unix:uid:1000 (repeatable, at least one)")
	ttl := fs.Duration("ttl", 0, "SVID lifetime for this entry and the longest an agent may request for it (0: the CA's default, up to its maximum)")
	anyUser := fs.Bool("allow-any-user", false, "accept an entry with unix:path/unix:sha256 selectors but no unix:uid or unix:gid: any local user who runs that executable obtains the identity")
	out := cli.OutputFlag(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *id == "" || *node == "" || len(sels) == 0:
		return cli.Usagef("entry create: --spiffe-id, --node and at least one --selector are required")
	case fs.NArg() > 0:
		return cli.Usagef("entry create: unexpected arguments %q", fs.Args())
	case *ttl < 0:
		return cli.Usagef("entry create: --ttl must not be negative")
	}
	if err := cli.CheckOutput("entry create", *out); err != nil {
		return err
	}
	conn, err := g.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminv1.NewAdminServiceClient(conn).CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &cav1.Entry{
		SpiffeId: *id, Node: *node, Selectors: sels, TtlSeconds: int64(*ttl / time.Second), AllowAnyUser: *anyUser,
	}})
	if err != nil {
		return err
	}
	if resp.GetEntry().GetAllowAnyUser() {
		fmt.Fprintf(g.Stderr, "WARNING: entry %s lets ANY local user of node %s obtain %s: its selectors name an executable but no unix:uid or unix:gid, "+
			"and anyone can run that executable. Prefer a unix:uid:N selector for the user the workload runs as.\n",
			resp.GetEntry().GetId(), resp.GetEntry().GetNode(), resp.GetEntry().GetSpiffeId())
	}
	return printEntries(g.Stdout, *out, []*cav1.Entry{resp.GetEntry()})
}

func entryList(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("entry list")
	node := fs.String("node", "", "only entries of this node")
	out := cli.OutputFlag(fs)
	if err := cli.ParseOutputOnly(fs, args, out); err != nil {
		return err
	}
	conn, err := g.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminv1.NewAdminServiceClient(conn).ListEntries(ctx, &adminv1.ListEntriesRequest{Node: *node})
	if err != nil {
		return err
	}
	return printEntries(g.Stdout, *out, resp.GetEntries())
}

func entryDelete(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("entry delete")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("entry delete: give exactly one entry ID")
	}
	conn, err := g.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := adminv1.NewAdminServiceClient(conn).DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: fs.Arg(0)}); err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "deleted entry %s\n", fs.Arg(0))
	return nil
}

// jsonEntry is the JSON form of an entry in castellanctl's output.
type jsonEntry struct {
	ID         string    `json:"id"`
	SPIFFEID   string    `json:"spiffe_id"`
	Node       string    `json:"node"`
	Selectors  []string  `json:"selectors"`
	TTLSeconds int64     `json:"ttl_seconds"`
	CreatedAt  time.Time `json:"created_at"`
	// AllowAnyUser: any local user may obtain the identity (--allow-any-user).
	AllowAnyUser bool `json:"allow_any_user"`
}

func printEntries(w io.Writer, format string, entries []*cav1.Entry) error {
	if format == "json" {
		out := make([]jsonEntry, 0, len(entries))
		for _, e := range entries {
			out = append(out, jsonEntry{ID: e.GetId(), SPIFFEID: e.GetSpiffeId(), Node: e.GetNode(),
				Selectors: selectorStrings(e), TTLSeconds: e.GetTtlSeconds(), CreatedAt: e.GetCreatedAt().AsTime(),
				AllowAnyUser: e.GetAllowAnyUser()})
		}
		return cli.WriteJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSPIFFE ID\tNODE\tSELECTORS\tTTL")
	for _, e := range entries {
		ttl := "default"
		if e.GetTtlSeconds() > 0 {
			ttl = (time.Duration(e.GetTtlSeconds()) * time.Second).String()
		}
		sels := strings.Join(selectorStrings(e), ",")
		if e.GetAllowAnyUser() {
			sels += " (ANY USER)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.GetId(), e.GetSpiffeId(), e.GetNode(), sels, ttl)
	}
	return tw.Flush()
}

func selectorStrings(e *cav1.Entry) []string {
	out := make([]string, 0, len(e.GetSelectors()))
	for _, s := range e.GetSelectors() {
		out = append(out, s.GetType()+":"+s.GetValue())
	}
	return out
}
