// Package authoritycmd holds castellanctl's authority command group: the
// CA's authorities and their rotation (list, prepare, activate, taint,
// revoke) over the admin API, with exit code 4 for a transition the CA
// refuses as unsafe.
package authoritycmd

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const authorityUsage = `usage: castellanctl authority <subcommand> [flags]

The CA's X.509 authorities (root + intermediate) and their rotation. Each
is prepared (its root is in the trust bundle, it does not sign yet), active
(it signs every SVID; exactly one is), old (no longer signs; trusted until
its last leaf expires), tainted (still trusted, but every agent replaces
each SVID under it now) or revoked (gone from the trust bundle).

subcommands:
  list [-o table|json]                     every authority, oldest first
  prepare [--new-root] [-o table|json]     prepare the next authority: a new
                                           intermediate under the active root,
                                           or under a new root (published at once)
  activate ID [--force] [-o table|json]    make a prepared authority sign; the
                                           active one becomes old
  taint ID [-o table|json]                 make every agent replace the SVIDs
                                           under an old authority now
  revoke ID [--force] [-o table|json]      remove an authority's root from the
                                           trust bundle

The CA refuses unsafe steps and says why (exit code 4): activating an
authority whose new root has not been in the bundle for the publish delay
(castellan-server --publish-delay; peers that have not received it would
reject its leaves), tainting the active one, revoking one whose leaves may
still be valid. --force overrides the publish delay and the leaf expiry,
at the cost of the workloads those rules protect. The server rotates by
itself too: it prepares the next authority at --prepare-at of the active
one's lifetime and activates it once the publish delay has passed.
`

// exitRefused is the exit code of a transition the CA refused as unsafe
// or meaningless in the authority's state (FailedPrecondition).
const exitRefused = 4

// refusedError is a refused authority transition.
type refusedError struct{ op, msg string }

func (e *refusedError) Error() string {
	return fmt.Sprintf("castellanctl: authority %s refused: %s", e.op, e.msg)
}

// ExitCode implements exitCoder.
func (e *refusedError) ExitCode() int { return exitRefused }

// refusal turns a FailedPrecondition from the server into a refusedError.
func refusal(op string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
		return &refusedError{op: op, msg: st.Message()}
	}
	return err
}

// Run runs `castellanctl authority ...` over the admin API.
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	if cli.IsHelp(args) {
		fmt.Fprint(g.Stdout, authorityUsage)
		return nil
	}
	sub, args, err := cli.Subcommand("authority", args, "list", "prepare", "activate", "taint", "revoke")
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		return authorityList(ctx, g, args)
	case "prepare":
		return authorityPrepare(ctx, g, args)
	default:
		return authorityTransition(ctx, g, sub, args)
	}
}

func authorityList(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewGroupFlags("authority list", authorityUsage)
	out := cli.OutputFlag(fs)
	if err := cli.ParseOutputOnly(fs, args, out); err != nil {
		return err
	}
	c, done, err := g.AdminClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.ListAuthorities(ctx, &adminv1.ListAuthoritiesRequest{})
	if err != nil {
		return refusal("list", err)
	}
	return printAuthorities(g.Stdout, *out, resp.GetAuthorities())
}

func authorityPrepare(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewGroupFlags("authority prepare", authorityUsage)
	newRoot := fs.Bool("new-root", false, "prepare it under a new root (a root rotation)")
	out := cli.OutputFlag(fs)
	if err := cli.ParseOutputOnly(fs, args, out); err != nil {
		return err
	}
	c, done, err := g.AdminClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.PrepareAuthority(ctx, &adminv1.PrepareAuthorityRequest{NewRoot: *newRoot})
	if err != nil {
		return refusal("prepare", err)
	}
	return printAuthority(g.Stdout, *out, resp.GetAuthority())
}

// authorityTransition runs activate, taint or revoke on one authority.
func authorityTransition(ctx context.Context, g *cli.Globals, op string, args []string) error {
	name := "authority " + op
	fs := g.NewGroupFlags(name, authorityUsage)
	var force *bool
	switch op {
	case "activate":
		force = fs.Bool("force", false, "activate before the new root has been published for the publish delay")
	case "revoke":
		force = fs.Bool("force", false, "revoke although leaves it signed may still be valid")
	}
	out := cli.OutputFlag(fs)
	id, err := cli.ParseOne(fs, args, "ID")
	if err != nil {
		return err
	}
	if err := cli.CheckOutput(name, *out); err != nil {
		return err
	}
	c, done, err := g.AdminClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	var a *adminv1.Authority
	switch op {
	case "activate":
		var resp *adminv1.ActivateAuthorityResponse
		if resp, err = c.ActivateAuthority(ctx, &adminv1.ActivateAuthorityRequest{Id: id, Force: *force}); err == nil {
			a = resp.GetAuthority()
		}
	case "taint":
		var resp *adminv1.TaintAuthorityResponse
		if resp, err = c.TaintAuthority(ctx, &adminv1.TaintAuthorityRequest{Id: id}); err == nil {
			a = resp.GetAuthority()
		}
	default:
		var resp *adminv1.RevokeAuthorityResponse
		if resp, err = c.RevokeAuthority(ctx, &adminv1.RevokeAuthorityRequest{Id: id, Force: *force}); err == nil {
			a = resp.GetAuthority()
		}
	}
	if err != nil {
		return refusal(op, err)
	}
	return printAuthority(g.Stdout, *out, a)
}

// AuthorityJSON is the -o json form of an authority.
type AuthorityJSON struct {
	ID              string     `json:"id"`
	State           string     `json:"state"`
	Source          string     `json:"source"`
	Intermediate    caCertJSON `json:"intermediate"`
	Root            caCertJSON `json:"root"`
	Roots           int        `json:"roots"`
	PreparedAt      *time.Time `json:"prepared_at,omitempty"`
	ActivatedAt     *time.Time `json:"activated_at,omitempty"`
	DeactivatedAt   *time.Time `json:"deactivated_at,omitempty"`
	TaintedAt       *time.Time `json:"tainted_at,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
	RootPublishedAt *time.Time `json:"root_published_at,omitempty"`
	ActivatableAt   *time.Time `json:"activatable_at,omitempty"`
	LeavesExpireBy  *time.Time `json:"leaves_expire_by,omitempty"`
}

// caCertJSON identifies one certificate.
type caCertJSON struct {
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
}

func caCertOf(der []byte) caCertJSON {
	sum := sha256.Sum256(der)
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return caCertJSON{Subject: "(unparsable: " + err.Error() + ")", SHA256: hex.EncodeToString(sum[:])}
	}
	return caCertJSON{Subject: c.Subject.String(), SHA256: hex.EncodeToString(sum[:]), NotAfter: c.NotAfter.UTC()}
}

func toAuthorityJSON(a *adminv1.Authority) AuthorityJSON {
	j := AuthorityJSON{ID: a.GetId(), State: a.GetState(), Source: a.GetSource(), Roots: len(a.GetRoots()),
		PreparedAt: cli.OptTime(a.GetPreparedAt()), ActivatedAt: cli.OptTime(a.GetActivatedAt()),
		DeactivatedAt: cli.OptTime(a.GetDeactivatedAt()), TaintedAt: cli.OptTime(a.GetTaintedAt()),
		RevokedAt: cli.OptTime(a.GetRevokedAt()), RootPublishedAt: cli.OptTime(a.GetRootPublishedAt()),
		ActivatableAt: cli.OptTime(a.GetActivatableAt()), LeavesExpireBy: cli.OptTime(a.GetLeavesExpireBy())}
	if ch := a.GetChain(); len(ch) > 0 {
		j.Intermediate = caCertOf(ch[0])
	}
	if rs := a.GetRoots(); len(rs) > 0 {
		j.Root = caCertOf(rs[0])
	}
	return j
}

func printAuthorities(w io.Writer, format string, list []*adminv1.Authority) error {
	if format == "json" {
		out := make([]AuthorityJSON, 0, len(list))
		for _, a := range list {
			out = append(out, toAuthorityJSON(a))
		}
		return cli.WriteJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSOURCE\tROOT SHA-256\tEXPIRES\tACTIVATABLE\tLEAVES EXPIRE BY")
	for _, a := range list {
		j := toAuthorityJSON(a)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.State, j.Source, short(j.Root.SHA256),
			j.Intermediate.NotAfter.Format(time.RFC3339), cli.FmtTime(a.GetActivatableAt()), cli.FmtTime(a.GetLeavesExpireBy()))
	}
	return tw.Flush()
}

func short(hexSum string) string {
	if len(hexSum) > 16 {
		return hexSum[:16]
	}
	return hexSum
}

// printAuthority prints one authority.
func printAuthority(w io.Writer, format string, a *adminv1.Authority) error {
	if a == nil {
		return errors.New("castellanctl: the server answered without the authority")
	}
	if format == "json" {
		return cli.WriteJSON(w, toAuthorityJSON(a))
	}
	j := toAuthorityJSON(a)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"ID", j.ID}, {"State", j.State}, {"Source", j.Source},
		{"Intermediate", j.Intermediate.Subject + " (expires " + j.Intermediate.NotAfter.Format(time.RFC3339) + ")"},
		{"Root", j.Root.Subject + " sha256:" + j.Root.SHA256},
		{"Root published", cli.FmtTime(a.GetRootPublishedAt())}, {"Activatable at", cli.FmtTime(a.GetActivatableAt())},
		{"Prepared", cli.FmtTime(a.GetPreparedAt())}, {"Activated", cli.FmtTime(a.GetActivatedAt())},
		{"Stopped signing", cli.FmtTime(a.GetDeactivatedAt())}, {"Tainted", cli.FmtTime(a.GetTaintedAt())},
		{"Revoked", cli.FmtTime(a.GetRevokedAt())}, {"Leaves expire by", cli.FmtTime(a.GetLeavesExpireBy())},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}
