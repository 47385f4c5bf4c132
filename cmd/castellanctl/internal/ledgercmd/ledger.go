// Package ledgercmd holds castellanctl's ledger command group: its table
// of subcommands, ledger export (the log's entries decoded as JSON lines)
// and ledger keygen (the log signing key replicas share). The checks of
// the log are in verifycmd, following it over HTTP in monitorcmd.
package ledgercmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/monitorcmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/verifycmd"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Run runs `castellanctl ledger verify|checkpoint|prove|export|keygen`.
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	sub, args, err := cli.Subcommand("ledger", args, "verify", "checkpoint", "prove", "export", "keygen", "monitor")
	if err != nil {
		return err
	}
	switch sub {
	case "verify":
		return verifycmd.Verify(ctx, g, args, logfile.VerifyFile)
	case "checkpoint":
		return verifycmd.Checkpoint(ctx, g, args)
	case "prove":
		return verifycmd.Prove(ctx, g, args)
	case "keygen":
		return ledgerKeygen(g, args)
	case "monitor":
		return monitorcmd.Run(ctx, g, args)
	default:
		return ledgerExport(ctx, g, args)
	}
}

// ExportLine is one JSON line of `ledger export`.
type ExportLine struct {
	Index           uint64     `json:"index"`
	Kind            string     `json:"kind,omitempty"`
	Time            *time.Time `json:"time,omitempty"`
	Serial          string     `json:"serial,omitempty"`
	SPIFFEID        string     `json:"spiffe_id,omitempty"`
	Node            string     `json:"node,omitempty"`
	NotBefore       *time.Time `json:"not_before,omitempty"`
	NotAfter        *time.Time `json:"not_after,omitempty"`
	PublicKeySHA256 string     `json:"public_key_sha256,omitempty"`
	Reason          string     `json:"reason,omitempty"`
	LeafHash        string     `json:"leaf_hash"`
	Pruned          bool       `json:"pruned,omitempty"`
	Error           string     `json:"error,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func ledgerExport(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("ledger export")
	from := fs.Uint64("from", 0, "first ledger index to export")
	out := fs.String("o", "json", "output format: json (JSON lines, one event per line)")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("ledger export: unexpected arguments %q", fs.Args())
	}
	if *out != "json" {
		return cli.Usagef("ledger export: only -o json (JSON lines) is supported")
	}
	c, done, err := g.AuditClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	w := bufio.NewWriter(g.Stdout)
	enc := json.NewEncoder(w)
	err = verifycmd.ExportLeaves(ctx, c, *from, func(lf verifier.Leaf) error {
		return enc.Encode(lineOf(lf))
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func lineOf(lf verifier.Leaf) ExportLine {
	line := ExportLine{Index: lf.Index, LeafHash: base64.StdEncoding.EncodeToString(lf.Hash)}
	if lf.Data == nil {
		line.Pruned = lf.Hash != nil
		if !line.Pruned {
			line.Error = "entry missing from the log"
		}
		return line
	}
	e, err := entry.Decode(lf.Data)
	if err != nil {
		line.Error = err.Error()
		return line
	}
	if !bytes.Equal(rfc6962.DefaultHasher.HashLeaf(lf.Data), lf.Hash) {
		line.Error = "entry does not hash to its stored leaf; run ledger verify"
	}
	line.Kind, line.Time, line.Serial, line.SPIFFEID, line.Node = string(e.Kind), timePtr(e.Time), e.Serial, e.SPIFFEID, e.Node
	line.NotBefore, line.NotAfter, line.PublicKeySHA256, line.Reason = timePtr(e.NotBefore), timePtr(e.NotAfter), e.PublicKeySHA256, e.Reason
	return line
}

// ledgerKeygen writes a new log signing key: every replica of a CA on
// PostgreSQL reads the same key file (a Secret); the database never holds
// it. It prints the verifier key auditors pin.
func ledgerKeygen(g *cli.Globals, args []string) error {
	fs := g.NewFlags("ledger keygen")
	out := fs.String("out", "", "file to create (mode 0600; must not exist)")
	td := fs.String("trust-domain", "cluster.local", "the trust domain whose log the key signs")
	origin := fs.String("origin", "", "the log's origin (first line of its checkpoints; the key is named after it; default <trust-domain>/castellan/ledger, as castellan-server names a new log)")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *out == "" {
		return cli.Usagef("ledger keygen: need --out FILE and no arguments")
	}
	if *origin == "" {
		*origin = logkey.OriginFor(*td)
	}
	vkey, err := logkey.GenerateKeyFile(*out, *origin)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.Stdout, "%s\n", vkey)
	return err
}
