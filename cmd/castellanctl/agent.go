package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const agentUsage = `usage: castellanctl agent <subcommand> [flags]

Node agents the CA knows (from join-token uses, agent SVIDs and bans in the
ledger), and node bans.

subcommands:
  list [-o table|json]                   every known node, its current agent SVID and ban
  show NODE [-o table|json]              one node
  ban NODE --reason TEXT [-o table|json] ban a node
  unban NODE --reason TEXT               lift a ban

A ban cuts a node off at once, whoever holds its credentials: every agent
certificate of the node, past and future, is refused on every call
(PermissionDenied naming the ban), its open SyncAgent streams are closed,
attestation of the node with a new join token or Kubernetes token is
refused, and every unexpired certificate issued to the node (agent and
workload SVIDs) is revoked: listed in the CRL (GET /crl) and pushed to every
other agent as revoked. Use it when an agent's key may be stolen: revoking
one agent certificate is not enough, since a thief renews it.

The ban is an event in the ledger (kind "ban", with the reason) and
survives restarts. Unban lets the node attest again with a new join token;
the certificates the ban revoked stay revoked.
`

// runAgent runs `castellanctl agent list|show|ban|unban` over the admin API.
func runAgent(ctx context.Context, g *globals, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(g.stdout, agentUsage)
		return nil
	}
	sub, args, err := subcommand("agent", args, "list", "show", "ban", "unban")
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		return agentList(ctx, g, args)
	case "show":
		return agentShow(ctx, g, args)
	case "ban":
		return agentBan(ctx, g, args, true)
	default:
		return agentBan(ctx, g, args, false)
	}
}

// agentFlags returns the flag set of an agent subcommand, whose -h prints
// the agent usage and the subcommand's flags.
func agentFlags(g *globals, name string) *flag.FlagSet {
	fs := newFlags(g, name)
	fs.Usage = func() {
		fmt.Fprint(g.stderr, agentUsage+"\nflags of "+name+":\n")
		fs.PrintDefaults()
	}
	return fs
}

// adminClient dials the server and returns an admin client and a closer.
func adminClient(ctx context.Context, g *globals) (adminv1.AdminServiceClient, func(), error) {
	conn, err := g.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	return adminv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

// agentJSON is the -o json form of an agent.
type agentJSON struct {
	Node      string     `json:"node"`
	SPIFFEID  string     `json:"spiffe_id,omitempty"`
	Serial    string     `json:"serial,omitempty"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
	FirstSeen *time.Time `json:"first_seen,omitempty"`
	LastSeen  *time.Time `json:"last_seen,omitempty"`
	Banned    bool       `json:"banned"`
	BanReason string     `json:"ban_reason,omitempty"`
	BannedAt  *time.Time `json:"banned_at,omitempty"`
	BanIndex  *uint64    `json:"ban_ledger_index,omitempty"`
}

func optTime(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

func toAgentJSON(a *adminv1.Agent) agentJSON {
	j := agentJSON{Node: a.GetNode(), SPIFFEID: a.GetSpiffeId(), Serial: a.GetSerial(),
		NotAfter: optTime(a.GetNotAfter()), FirstSeen: optTime(a.GetFirstSeen()), LastSeen: optTime(a.GetLastSeen()),
		Banned: a.GetBanned(), BanReason: a.GetBanReason(), BannedAt: optTime(a.GetBannedAt())}
	if a.GetBanned() {
		idx := a.GetBanIndex()
		j.BanIndex = &idx
	}
	return j
}

func fmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// banText is the STATUS column of an agent.
func banText(a *adminv1.Agent) string {
	if !a.GetBanned() {
		return "active"
	}
	return "BANNED (" + a.GetBanReason() + ")"
}

func agentList(ctx context.Context, g *globals, args []string) error {
	fs := agentFlags(g, "agent list")
	out := outputFlag(fs)
	if err := parseOutputOnly(fs, args, out); err != nil {
		return err
	}
	c, done, err := adminClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.ListAgents(ctx, &adminv1.ListAgentsRequest{})
	if err != nil {
		return err
	}
	return printAgents(g.stdout, *out, resp.GetAgents())
}

func printAgents(w io.Writer, format string, agents []*adminv1.Agent) error {
	if format == "json" {
		out := make([]agentJSON, 0, len(agents))
		for _, a := range agents {
			out = append(out, toAgentJSON(a))
		}
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tAGENT SERIAL\tEXPIRES\tFIRST SEEN\tLAST SEEN\tSTATUS")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.GetNode(), orDash(a.GetSerial()), fmtTime(a.GetNotAfter()),
			fmtTime(a.GetFirstSeen()), fmtTime(a.GetLastSeen()), banText(a))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func agentShow(ctx context.Context, g *globals, args []string) error {
	fs := agentFlags(g, "agent show")
	out := outputFlag(fs)
	node, err := parseOne(fs, args, "NODE")
	if err != nil {
		return err
	}
	if err := checkOutput("agent show", *out); err != nil {
		return err
	}
	c, done, err := adminClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.GetAgent(ctx, &adminv1.GetAgentRequest{Node: node})
	if err != nil {
		return err
	}
	return printAgent(g.stdout, *out, resp.GetAgent(), nil)
}

// printAgent prints one agent (and, after a ban, the serials it revoked).
func printAgent(w io.Writer, format string, a *adminv1.Agent, revoked []string) error {
	if format == "json" {
		if revoked == nil {
			return writeJSON(w, toAgentJSON(a))
		}
		return writeJSON(w, struct {
			agentJSON
			Revoked []string `json:"revoked_serials"`
		}{toAgentJSON(a), revoked})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"Node", a.GetNode()}, {"Agent SPIFFE ID", orDash(a.GetSpiffeId())}, {"Agent serial", orDash(a.GetSerial())},
		{"Expires", fmtTime(a.GetNotAfter())}, {"First seen", fmtTime(a.GetFirstSeen())},
		{"Last seen", fmtTime(a.GetLastSeen())}, {"Status", banText(a)},
	}
	if a.GetBanned() {
		rows = append(rows, [2]string{"Banned", fmt.Sprintf("%s (ledger index %d)", fmtTime(a.GetBannedAt()), a.GetBanIndex())})
	}
	if revoked != nil {
		rows = append(rows, [2]string{"Revoked by the ban", fmt.Sprintf("%d certificate(s) %s", len(revoked), strings.Join(revoked, " "))})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// agentBan runs `agent ban` (ban true) or `agent unban`.
func agentBan(ctx context.Context, g *globals, args []string, ban bool) error {
	name := "agent unban"
	if ban {
		name = "agent ban"
	}
	fs := agentFlags(g, name)
	reason := fs.String("reason", "", "why, written to the ledger (required)")
	out := outputFlag(fs)
	node, err := parseOne(fs, args, "NODE")
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return usagef("%s: --reason is required (it is written to the ledger)", name)
	}
	if err := checkOutput(name, *out); err != nil {
		return err
	}
	c, done, err := adminClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	if !ban {
		resp, err := c.UnbanAgent(ctx, &adminv1.UnbanAgentRequest{Node: node, Reason: *reason})
		if err != nil {
			return err
		}
		if *out == "json" {
			return writeJSON(g.stdout, struct {
				agentJSON
				UnbanIndex uint64 `json:"unban_ledger_index"`
			}{toAgentJSON(resp.GetAgent()), resp.GetUnbanIndex()})
		}
		_, err = fmt.Fprintf(g.stdout, "unbanned node %s at ledger index %d; it may attest again with a new join token (revoked certificates stay revoked)\n",
			node, resp.GetUnbanIndex())
		return err
	}
	resp, err := c.BanAgent(ctx, &adminv1.BanAgentRequest{Node: node, Reason: *reason})
	if err != nil {
		return err
	}
	revoked := resp.GetRevokedSerials()
	if revoked == nil {
		revoked = []string{}
	}
	return printAgent(g.stdout, *out, resp.GetAgent(), revoked)
}
