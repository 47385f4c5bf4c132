// Package certscmd holds castellanctl's certs command group: the issued
// certificates the audit API indexes (list, show with lineage, revoke).
package certscmd

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Run runs `castellanctl certs list|show|revoke` over the audit API.
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	sub, args, err := cli.Subcommand("certs", args, "list", "show", "revoke")
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		return certsList(ctx, g, args)
	case "show":
		return certsShow(ctx, g, args)
	default:
		return certsRevoke(ctx, g, args)
	}
}

var states = map[string]auditv1.State{
	"": auditv1.State_STATE_UNSPECIFIED, "any": auditv1.State_STATE_UNSPECIFIED,
	"active": auditv1.State_STATE_ACTIVE, "expired": auditv1.State_STATE_EXPIRED, "revoked": auditv1.State_STATE_REVOKED,
}

// parseWhen reads an RFC 3339 time or a duration before now ("24h").
func parseWhen(s string, now time.Time) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return timestamppb.New(now.Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither RFC 3339 (2026-01-02T15:04:05Z) nor a duration ago (24h)", s)
	}
	return timestamppb.New(t), nil
}

func certsList(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("certs list")
	req := &auditv1.ListRequest{Kinds: []string{"issuance", "renewal"}}
	fs.StringVar(&req.SpiffeId, "spiffe-id", "", "exact SPIFFE ID")
	fs.StringVar(&req.SpiffeIdPrefix, "prefix", "", "SPIFFE ID prefix, e.g. spiffe://cluster.local/ns/bookinfo/")
	fs.StringVar(&req.Namespace, "namespace", "", "Kubernetes namespace")
	fs.StringVar(&req.Node, "node", "", "node the certificate was issued to")
	fs.StringVar(&req.Serial, "serial", "", "serial number (hex)")
	state := fs.String("state", "", "active, expired or revoked (default any)")
	since := fs.String("since", "", "issued at or after: RFC 3339 time or duration ago (24h)")
	until := fs.String("until", "", "issued before: RFC 3339 time or duration ago")
	limit := fs.Int("limit", 100, "stop after this many certificates (0: no limit, pages through everything)")
	pageSize := fs.Int("page-size", 100, "certificates per request (1..1000)")
	out := cli.OutputFlag(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	st, ok := states[*state]
	switch {
	case !ok:
		return cli.Usagef("certs list: --state %q is not active, expired or revoked", *state)
	case fs.NArg() > 0:
		return cli.Usagef("certs list: unexpected arguments %q", fs.Args())
	case *limit < 0 || *pageSize < 1 || *pageSize > 1000:
		return cli.Usagef("certs list: --limit must be >= 0 and --page-size 1..1000")
	}
	if err := cli.CheckOutput("certs list", *out); err != nil {
		return err
	}
	var err error
	now := time.Now()
	if req.Since, err = parseWhen(*since, now); err != nil {
		return cli.Usagef("certs list: --since: %v", err)
	}
	if req.Until, err = parseWhen(*until, now); err != nil {
		return cli.Usagef("certs list: --until: %v", err)
	}
	req.State, req.PageSize = st, int32(*pageSize)
	c, done, err := g.AuditClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	events, err := listPages(ctx, c, req, *limit)
	if err != nil {
		return err
	}
	return printCerts(g.Stdout, *out, events, now)
}

// listPages asks for the pages of req until limit events (0: all).
func listPages(ctx context.Context, c auditv1.AuditServiceClient, req *auditv1.ListRequest, limit int) ([]*auditv1.Event, error) {
	var events []*auditv1.Event
	for limit == 0 || len(events) < limit {
		resp, err := c.List(ctx, req)
		if err != nil {
			return nil, err
		}
		events = append(events, resp.GetEvents()...)
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if limit > 0 && len(events) > limit {
		events = events[:limit]
	}
	return events, nil
}

// CertJSON is the -o json form of a certificate.
type CertJSON struct {
	Index           uint64     `json:"index"`
	Kind            string     `json:"kind"`
	Serial          string     `json:"serial"`
	SPIFFEID        string     `json:"spiffe_id"`
	Node            string     `json:"node,omitempty"`
	IssuedAt        time.Time  `json:"issued_at"`
	NotBefore       time.Time  `json:"not_before"`
	NotAfter        time.Time  `json:"not_after"`
	State           string     `json:"state"`
	PublicKeySHA256 string     `json:"public_key_sha256,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
	RevokeReason    string     `json:"revocation_reason,omitempty"`
	ParentSerial    string     `json:"parent_serial,omitempty"`
	CertDER         []byte     `json:"cert_der,omitempty"`
}

// CertShowJSON is the -o json form of `certs show`: the certificate and
// its lineage.
type CertShowJSON struct {
	CertJSON
	Ancestors        []CertJSON `json:"ancestors"`
	Descendants      []CertJSON `json:"descendants"`
	LineageTruncated bool       `json:"lineage_truncated,omitempty"`
}

func stateOf(e *auditv1.Event, now time.Time) string {
	switch {
	case e.GetRevocation() != nil:
		return "revoked"
	case e.GetNotAfter() != nil && !e.GetNotAfter().AsTime().After(now):
		return "expired"
	default:
		return "active"
	}
}

func toCertJSON(e *auditv1.Event, now time.Time, withCert bool) CertJSON {
	c := CertJSON{
		Index: e.GetIndex(), Kind: e.GetKind(), Serial: e.GetSerial(), SPIFFEID: e.GetSpiffeId(), Node: e.GetNode(),
		IssuedAt: e.GetTime().AsTime(), NotBefore: e.GetNotBefore().AsTime(), NotAfter: e.GetNotAfter().AsTime(),
		State: stateOf(e, now), PublicKeySHA256: e.GetPublicKeySha256(), ParentSerial: e.GetParentSerial(),
	}
	if r := e.GetRevocation(); r != nil {
		t := r.GetTime().AsTime()
		c.RevokedAt, c.RevokeReason = &t, r.GetReason()
	}
	if withCert {
		c.CertDER = e.GetCertDer()
	}
	return c
}

func printCerts(w io.Writer, format string, events []*auditv1.Event, now time.Time) error {
	if format == "json" {
		out := make([]CertJSON, 0, len(events))
		for _, e := range events {
			out = append(out, toCertJSON(e, now, false))
		}
		return cli.WriteJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERIAL\tSPIFFE ID\tNODE\tISSUED\tEXPIRES\tSTATE")
	for _, e := range events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.GetSerial(), e.GetSpiffeId(), e.GetNode(),
			e.GetTime().AsTime().UTC().Format(time.RFC3339), e.GetNotAfter().AsTime().UTC().Format(time.RFC3339), stateOf(e, now))
	}
	return tw.Flush()
}

func certsShow(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("certs show")
	fs.Usage = func() {
		fmt.Fprintln(g.Stderr, "usage: castellanctl certs show SERIAL [-o table|json]\n\n"+
			"Shows a certificate, its inclusion in the ledger and its lineage: the certificates it was renewed\n"+
			"from (ancestors, parent first) and those renewed from it (descendants). Agent SVIDs and\n"+
			"certificates renewed with themselves over the Istio API record the serial they renewed.")
		fs.PrintDefaults()
	}
	out := cli.OutputFlag(fs)
	serial, err := cli.ParseOne(fs, args, "SERIAL")
	if err != nil {
		return err
	}
	if err := cli.CheckOutput("certs show", *out); err != nil {
		return err
	}
	c, done, err := g.AuditClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.Get(ctx, &auditv1.GetRequest{Serial: serial, Lineage: true})
	if err != nil {
		return err
	}
	now := time.Now()
	if *out == "json" {
		return cli.WriteJSON(g.Stdout, showJSON(resp, now))
	}
	if err := printCert(g.Stdout, toCertJSON(resp.GetEvent(), now, true), resp.GetProof().GetTreeSize()); err != nil {
		return err
	}
	return printLineage(g.Stdout, resp, now)
}

// showJSON is the -o json form of certs show.
func showJSON(resp *auditv1.GetResponse, now time.Time) CertShowJSON {
	sj := CertShowJSON{CertJSON: toCertJSON(resp.GetEvent(), now, true), Ancestors: []CertJSON{}, Descendants: []CertJSON{},
		LineageTruncated: resp.GetLineageTruncated()}
	for _, e := range resp.GetAncestors() {
		sj.Ancestors = append(sj.Ancestors, toCertJSON(e, now, false))
	}
	for _, e := range resp.GetDescendants() {
		sj.Descendants = append(sj.Descendants, toCertJSON(e, now, false))
	}
	return sj
}

// printCert prints a certificate as a table, with the size of the tree it
// was logged in.
func printCert(w io.Writer, cj CertJSON, treeSize uint64) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"Serial", cj.Serial}, {"SPIFFE ID", cj.SPIFFEID}, {"Node", cj.Node}, {"Kind", cj.Kind},
		{"State", cj.State}, {"Issued", cj.IssuedAt.UTC().Format(time.RFC3339)},
		{"Not before", cj.NotBefore.UTC().Format(time.RFC3339)}, {"Not after", cj.NotAfter.UTC().Format(time.RFC3339)},
		{"Public key SHA-256", cj.PublicKeySHA256}, {"Ledger index", fmt.Sprint(cj.Index)},
		{"Logged in tree of size", fmt.Sprint(treeSize)},
	}
	if cj.ParentSerial != "" {
		rows = append(rows, [2]string{"Renewed from", cj.ParentSerial})
	}
	if cj.RevokedAt != nil {
		rows = append(rows, [2]string{"Revoked", cj.RevokedAt.UTC().Format(time.RFC3339) + " (" + cj.RevokeReason + ")"})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// printLineage prints the ancestors (oldest first) and descendants of a
// certificate as a table, when it has any.
func printLineage(w io.Writer, resp *auditv1.GetResponse, now time.Time) error {
	anc, desc := resp.GetAncestors(), resp.GetDescendants()
	if len(anc) == 0 && len(desc) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nLineage:\nRELATION\tSERIAL\tRENEWED FROM\tISSUED\tEXPIRES\tSTATE")
	row := func(rel string, e *auditv1.Event) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", rel, e.GetSerial(), cli.OrDash(e.GetParentSerial()),
			e.GetTime().AsTime().UTC().Format(time.RFC3339), e.GetNotAfter().AsTime().UTC().Format(time.RFC3339), stateOf(e, now))
	}
	for i := len(anc) - 1; i >= 0; i-- {
		row(fmt.Sprintf("ancestor -%d", i+1), anc[i])
	}
	row("this", resp.GetEvent())
	for _, e := range desc {
		row("descendant", e)
	}
	if resp.GetLineageTruncated() {
		fmt.Fprintln(tw, "...\t(lineage truncated)\t\t\t\t")
	}
	return tw.Flush()
}

func certsRevoke(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("certs revoke")
	fs.Usage = func() {
		fmt.Fprintln(g.Stderr, "usage: castellanctl certs revoke SERIAL --reason TEXT [--with-descendants] [-o table|json]\n\n"+
			"Revokes a certificate: the revocation is logged, published in the CRL (GET /crl) and pushed to agents.\n"+
			"With --with-descendants, every certificate renewed from it (and renewed from those, ...) is revoked\n"+
			"too, in the same ledger append: use it for a stolen agent key, whose holder may have renewed it.\n"+
			"To cut off a whole node, use `castellanctl agent ban`.")
		fs.PrintDefaults()
	}
	reason := fs.String("reason", "", "why (keyCompromise, superseded, cessationOfOperation, ... or free text; required)")
	withDesc := fs.Bool("with-descendants", false, "also revoke every certificate descended from this one (see certs show)")
	out := cli.OutputFlag(fs)
	serial, err := cli.ParseOne(fs, args, "SERIAL")
	if err != nil {
		return err
	}
	if *reason == "" {
		return cli.Usagef("certs revoke: --reason is required")
	}
	if err := cli.CheckOutput("certs revoke", *out); err != nil {
		return err
	}
	c, done, err := g.AuditClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.Revoke(ctx, &auditv1.RevokeRequest{Serial: serial, Reason: *reason, WithDescendants: *withDesc})
	if err != nil {
		return err
	}
	if *withDesc {
		return printRevocations(g.Stdout, *out, resp.GetRevocations())
	}
	r := resp.GetRevocation()
	if *out == "json" {
		return cli.WriteJSON(g.Stdout, map[string]any{
			"serial": r.GetSerial(), "spiffe_id": r.GetSpiffeId(), "reason": r.GetReason(),
			"revoked_at": r.GetTime().AsTime(), "ledger_index": r.GetIndex(),
		})
	}
	_, err = fmt.Fprintf(g.Stdout, "revoked %s (%s) at ledger index %d\n", r.GetSerial(), r.GetSpiffeId(), r.GetIndex())
	return err
}

// printRevocations prints the revocations of `certs revoke --with-descendants`.
func printRevocations(w io.Writer, format string, revs []*auditv1.Event) error {
	if format == "json" {
		out := make([]map[string]any, 0, len(revs))
		for _, r := range revs {
			out = append(out, map[string]any{
				"serial": r.GetSerial(), "spiffe_id": r.GetSpiffeId(), "reason": r.GetReason(),
				"revoked_at": r.GetTime().AsTime(), "ledger_index": r.GetIndex(),
			})
		}
		return cli.WriteJSON(w, map[string]any{"revocations": out})
	}
	for _, r := range revs {
		if _, err := fmt.Fprintf(w, "revoked %s (%s) at ledger index %d\n", r.GetSerial(), r.GetSpiffeId(), r.GetIndex()); err != nil {
			return err
		}
	}
	return nil
}
