package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authz"
)

// runEntry runs `castellanctl entry create|list|delete`.
func runEntry(ctx context.Context, g *globals, args []string) error {
	sub, args, err := subcommand("entry", args, "create", "list", "delete")
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

func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("o", "table", "output format: table or json")
}

// parseOutputOnly parses args into fs for a command that takes no positional
// arguments and whose -o flag out must be table or json.
func parseOutputOnly(fs *flag.FlagSet, args []string, out *string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return checkOutput(fs.Name(), *out)
}

func checkOutput(cmd, o string) error {
	if o != "table" && o != "json" {
		return usagef("%s: -o %q is not table or json", cmd, o)
	}
	return nil
}

func entryCreate(ctx context.Context, g *globals, args []string) error {
	fs := newFlags(g, "entry create")
	id := fs.String("spiffe-id", "", "SPIFFE ID to assign (required)")
	node := fs.String("node", "", "node whose agent may obtain it (required)")
	var sels selectorFlag
	fs.Var(&sels, "selector", "workload selector TYPE:KEY:VALUE, e.g. unix:uid:1000 (repeatable, at least one)")
	ttl := fs.Duration("ttl", 0, "SVID lifetime for this entry and the longest an agent may request for it (0: the CA's default, up to its maximum)")
	anyUser := fs.Bool("allow-any-user", false, "accept an entry with unix:path/unix:sha256 selectors but no unix:uid or unix:gid: any local user who runs that executable obtains the identity")
	out := outputFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *id == "" || *node == "" || len(sels) == 0:
		return usagef("entry create: --spiffe-id, --node and at least one --selector are required")
	case fs.NArg() > 0:
		return usagef("entry create: unexpected arguments %q", fs.Args())
	case *ttl < 0:
		return usagef("entry create: --ttl must not be negative")
	}
	if err := checkOutput("entry create", *out); err != nil {
		return err
	}
	conn, err := g.dial(ctx)
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
		fmt.Fprintf(g.stderr, "WARNING: entry %s lets ANY local user of node %s obtain %s: its selectors name an executable but no unix:uid or unix:gid, "+
			"and anyone can run that executable. Prefer a unix:uid:N selector for the user the workload runs as.\n",
			resp.GetEntry().GetId(), resp.GetEntry().GetNode(), resp.GetEntry().GetSpiffeId())
	}
	return printEntries(g.stdout, *out, []*cav1.Entry{resp.GetEntry()})
}

func entryList(ctx context.Context, g *globals, args []string) error {
	fs := newFlags(g, "entry list")
	node := fs.String("node", "", "only entries of this node")
	out := outputFlag(fs)
	if err := parseOutputOnly(fs, args, out); err != nil {
		return err
	}
	conn, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminv1.NewAdminServiceClient(conn).ListEntries(ctx, &adminv1.ListEntriesRequest{Node: *node})
	if err != nil {
		return err
	}
	return printEntries(g.stdout, *out, resp.GetEntries())
}

func entryDelete(ctx context.Context, g *globals, args []string) error {
	fs := newFlags(g, "entry delete")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("entry delete: give exactly one entry ID")
	}
	conn, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := adminv1.NewAdminServiceClient(conn).DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: fs.Arg(0)}); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "deleted entry %s\n", fs.Arg(0))
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
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
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
