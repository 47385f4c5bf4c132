// Package agentcmd holds castellanctl's agent command group: the node
// agents the CA knows and node bans (list, show, ban, unban) over the
// admin API.
package agentcmd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
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

// Run runs `castellanctl agent list|show|ban|unban` over the admin API.
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	if cli.IsHelp(args) {
		fmt.Fprint(g.Stdout, agentUsage)
		return nil
	}
	sub, args, err := cli.Subcommand("agent", args, "list", "show", "ban", "unban")
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

// AgentJSON is the -o json form of an agent.
type AgentJSON struct {
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

func toAgentJSON(a *adminv1.Agent) AgentJSON {
	j := AgentJSON{Node: a.GetNode(), SPIFFEID: a.GetSpiffeId(), Serial: a.GetSerial(),
		NotAfter: cli.OptTime(a.GetNotAfter()), FirstSeen: cli.OptTime(a.GetFirstSeen()), LastSeen: cli.OptTime(a.GetLastSeen()),
		Banned: a.GetBanned(), BanReason: a.GetBanReason(), BannedAt: cli.OptTime(a.GetBannedAt())}
	if a.GetBanned() {
		idx := a.GetBanIndex()
		j.BanIndex = &idx
	}
	return j
}

// banText is the STATUS column of an agent.
func banText(a *adminv1.Agent) string {
	if !a.GetBanned() {
		return "active"
	}
	return "BANNED (" + a.GetBanReason() + ")"
}

func agentList(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewGroupFlags("agent list", agentUsage)
	out := cli.OutputFlag(fs)
	if err := cli.ParseOutputOnly(fs, args, out); err != nil {
		return err
	}
	c, done, err := g.AdminClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.ListAgents(ctx, &adminv1.ListAgentsRequest{})
	if err != nil {
		return err
	}
	return printAgents(g.Stdout, *out, resp.GetAgents())
}

func printAgents(w io.Writer, format string, agents []*adminv1.Agent) error {
	if format == "json" {
		out := make([]AgentJSON, 0, len(agents))
		for _, a := range agents {
			out = append(out, toAgentJSON(a))
		}
		return cli.WriteJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tAGENT SERIAL\tEXPIRES\tFIRST SEEN\tLAST SEEN\tSTATUS")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.GetNode(), cli.OrDash(a.GetSerial()), cli.FmtTime(a.GetNotAfter()),
			cli.FmtTime(a.GetFirstSeen()), cli.FmtTime(a.GetLastSeen()), banText(a))
	}
	return tw.Flush()
}

func agentShow(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewGroupFlags("agent show", agentUsage)
	out := cli.OutputFlag(fs)
	node, err := cli.ParseOne(fs, args, "NODE")
	if err != nil {
		return err
	}
	if err := cli.CheckOutput("agent show", *out); err != nil {
		return err
	}
	c, done, err := g.AdminClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.GetAgent(ctx, &adminv1.GetAgentRequest{Node: node})
	if err != nil {
		return err
	}
	return printAgent(g.Stdout, *out, resp.GetAgent(), nil)
}

// printAgent prints one agent (and, after a ban, the serials it revoked).
func printAgent(w io.Writer, format string, a *adminv1.Agent, revoked []string) error {
	if format == "json" {
		if revoked == nil {
			return cli.WriteJSON(w, toAgentJSON(a))
		}
		return cli.WriteJSON(w, struct {
			AgentJSON
			Revoked []string `json:"revoked_serials"`
		}{toAgentJSON(a), revoked})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"Node", a.GetNode()}, {"Agent SPIFFE ID", cli.OrDash(a.GetSpiffeId())}, {"Agent serial", cli.OrDash(a.GetSerial())},
		{"Expires", cli.FmtTime(a.GetNotAfter())}, {"First seen", cli.FmtTime(a.GetFirstSeen())},
		{"Last seen", cli.FmtTime(a.GetLastSeen())}, {"Status", banText(a)},
	}
	if a.GetBanned() {
		rows = append(rows, [2]string{"Banned", fmt.Sprintf("%s (ledger index %d)", cli.FmtTime(a.GetBannedAt()), a.GetBanIndex())})
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
func agentBan(ctx context.Context, g *cli.Globals, args []string, ban bool) error {
	name := "agent unban"
	if ban {
		name = "agent ban"
	}
	fs := g.NewGroupFlags(name, agentUsage)
	reason := fs.String("reason", "", "why, written to the ledger (required)")
	out := cli.OutputFlag(fs)
	node, err := cli.ParseOne(fs, args, "NODE")
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return cli.Usagef("%s: --reason is required (it is written to the ledger)", name)
	}
	if err := cli.CheckOutput(name, *out); err != nil {
		return err
	}
	c, done, err := g.AdminClient(ctx)
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
			return cli.WriteJSON(g.Stdout, struct {
				AgentJSON
				UnbanIndex uint64 `json:"unban_ledger_index"`
			}{toAgentJSON(resp.GetAgent()), resp.GetUnbanIndex()})
		}
		_, err = fmt.Fprintf(g.Stdout, "unbanned node %s at ledger index %d; it may attest again with a new join token (revoked certificates stay revoked)\n",
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
	return printAgent(g.Stdout, *out, resp.GetAgent(), revoked)
}
