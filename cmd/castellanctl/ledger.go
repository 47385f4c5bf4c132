package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// runLedger runs `castellanctl ledger verify|checkpoint|prove|export|keygen`.
func runLedger(ctx context.Context, g *globals, args []string) error {
	sub, args, err := subcommand("ledger", args, "verify", "checkpoint", "prove", "export", "keygen", "monitor")
	if err != nil {
		return err
	}
	switch sub {
	case "verify":
		return ledgerVerify(ctx, g, args)
	case "checkpoint":
		return ledgerCheckpoint(ctx, g, args)
	case "prove":
		return ledgerProve(ctx, g, args)
	case "keygen":
		return ledgerKeygen(g, args)
	case "monitor":
		return ledgerMonitor(ctx, g, args)
	default:
		return ledgerExport(ctx, g, args)
	}
}

// VerificationError means the log does not verify: it was altered, or a
// checkpoint or proof is wrong. Its ExitCode (3) tells scripts apart from
// other failures (1) when the dispatcher honours it.
type VerificationError struct{ Problems int }

// Error says how many problems verification found.
func (e *VerificationError) Error() string {
	return fmt.Sprintf("castellanctl: ledger verification FAILED with %d problem(s)", e.Problems)
}

// ExitCode is the process exit code for a failed verification.
func (e *VerificationError) ExitCode() int { return 3 }

// logKeyFlag adds --log-key, the pinned note verifier key of the log.
func logKeyFlag(fs interface {
	StringVar(*string, string, string, string)
}) *string {
	k := new(string)
	fs.StringVar(k, "log-key", os.Getenv("CASTELLAN_LOG_KEY"),
		"the log's note verifier key NAME+HASH+KEY to trust (env CASTELLAN_LOG_KEY; default: the key the server reports)")
	return k
}

// latest fetches the latest checkpoint and opens it with the pinned key,
// or the server's key when none is pinned (with a warning).
func latest(ctx context.Context, g *globals, c auditv1.AuditServiceClient, pinned string) (*auditv1.CheckpointResponse, *log.Checkpoint, string, error) {
	resp, err := c.Checkpoint(ctx, &auditv1.CheckpointRequest{})
	if err != nil {
		return nil, nil, "", err
	}
	vkey := pinned
	if vkey == "" {
		vkey = resp.GetVerifierKey()
		fmt.Fprintf(g.stderr, "castellanctl: warning: trusting the log key the server reports (%s); pin it with --log-key\n", vkey)
	}
	cp, err := verifier.OpenCheckpoint(resp.GetCheckpoint(), resp.GetOrigin(), vkey)
	if err != nil {
		fmt.Fprintf(g.stderr, "castellanctl: the server's checkpoint does not verify with log key %s: %v\n", vkey, err)
		return nil, nil, "", &VerificationError{Problems: 1}
	}
	return resp, cp, vkey, nil
}

func ledgerCheckpoint(ctx context.Context, g *globals, args []string) error {
	fs := newFlags(g, "ledger checkpoint")
	save := fs.String("save", "", "also write the signed checkpoint to this file (for a later verify --since)")
	key := logKeyFlag(fs)
	out := outputFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("ledger checkpoint: unexpected arguments %q", fs.Args())
	}
	if err := checkOutput("ledger checkpoint", *out); err != nil {
		return err
	}
	c, done, err := auditClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	resp, cp, vkey, err := latest(ctx, g, c, *key)
	if err != nil {
		return err
	}
	if *save != "" {
		if err := os.WriteFile(*save, resp.GetCheckpoint(), 0o644); err != nil {
			return fmt.Errorf("castellanctl: save checkpoint: %w", err)
		}
	}
	if *out == "json" {
		return writeJSON(g.stdout, map[string]any{
			"origin": cp.Origin, "size": cp.Size, "root_hash": base64.StdEncoding.EncodeToString(cp.Hash),
			"verifier_key": vkey, "checkpoint": string(resp.GetCheckpoint()),
		})
	}
	_, err = g.stdout.Write(resp.GetCheckpoint())
	return err
}

// verifyResult is the -o json output of ledger verify.
type verifyResult struct {
	OK             bool     `json:"ok"`
	Entries        uint64   `json:"entries"`
	Pruned         uint64   `json:"pruned"`
	CheckpointSize uint64   `json:"checkpoint_size"`
	RootHash       string   `json:"root_hash"`
	SinceSize      *uint64  `json:"since_size,omitempty"`
	Consistency    string   `json:"consistency,omitempty"`
	Problems       int      `json:"problems"`
	Findings       []string `json:"findings"`
}

func ledgerVerify(ctx context.Context, g *globals, args []string) error {
	fs := newFlags(g, "ledger verify")
	since := fs.String("since", "", "a checkpoint saved earlier (ledger checkpoint --save); also prove the log only grew since")
	db := fs.String("db", "", "verify this ledger file offline instead of asking the server (the server must be stopped; needs --log-key)")
	key := logKeyFlag(fs)
	out := outputFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("ledger verify: unexpected arguments %q", fs.Args())
	}
	if err := checkOutput("ledger verify", *out); err != nil {
		return err
	}
	if *db != "" {
		return verifyFile(g, *db, *key, *since, *out)
	}
	c, done, err := auditClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	resp, cp, vkey, err := latest(ctx, g, c, *key)
	if err != nil {
		return err
	}
	res := verifyResult{CheckpointSize: cp.Size, Findings: []string{}}
	cps := []*log.Checkpoint{cp}
	var old *log.Checkpoint
	if *since != "" {
		raw, err := os.ReadFile(*since)
		if err != nil {
			return fmt.Errorf("castellanctl: --since: %w", err)
		}
		if old, err = verifier.OpenCheckpoint(raw, resp.GetOrigin(), vkey); err != nil {
			res.Findings = append(res.Findings, fmt.Sprintf("checkpoint %s is not signed by the log key %s: %v", *since, vkey, err))
			res.Problems++
			return finishVerify(g, *out, res)
		}
		res.SinceSize = &old.Size
		cps = append(cps, old)
	}
	tv := verifier.NewTree(cps...)
	if err := exportLeaves(ctx, c, 0, func(lf verifier.Leaf) error { tv.Add(lf); return nil }); err != nil {
		return err
	}
	rep := tv.Finish()
	res.Entries, res.Pruned, res.Problems = rep.Entries, rep.Pruned, rep.ProblemCount
	res.RootHash = base64.StdEncoding.EncodeToString(rep.Root)
	res.Findings = append(res.Findings, rep.Findings...)
	if old != nil {
		res.Consistency = checkConsistency(ctx, c, old, cp)
		if res.Consistency != "ok" {
			res.Problems++
			res.Findings = append(res.Findings, res.Consistency)
		}
	}
	return finishVerify(g, *out, res)
}

// verifyFile verifies a stopped server's ledger file directly.
func verifyFile(g *globals, path, vkey, since, format string) error {
	if vkey == "" {
		return usagef("ledger verify --db needs --log-key (the file's own key cannot vouch for it)")
	}
	var extra [][]byte
	if since != "" {
		raw, err := os.ReadFile(since)
		if err != nil {
			return fmt.Errorf("castellanctl: --since: %w", err)
		}
		extra = append(extra, raw)
	}
	rep, err := logfile.VerifyFile(path, vkey, extra...)
	if err != nil {
		return err
	}
	res := verifyResult{Entries: rep.Entries, Pruned: rep.Pruned, Problems: rep.ProblemCount,
		RootHash: base64.StdEncoding.EncodeToString(rep.Root), CheckpointSize: rep.Checkpoint, Findings: append([]string{}, rep.Findings...)}
	return finishVerify(g, format, res)
}

// checkConsistency asks the server for a consistency proof from old to cur
// and verifies it; it returns "ok" or what failed.
func checkConsistency(ctx context.Context, c auditv1.AuditServiceClient, old, cur *log.Checkpoint) string {
	if old.Size > cur.Size {
		return fmt.Sprintf("consistency proof failed: the saved checkpoint has %d entries but the log now has %d: the log was truncated", old.Size, cur.Size)
	}
	resp, err := c.Consistency(ctx, &auditv1.ConsistencyRequest{FromSize: old.Size, ToSize: cur.Size})
	if err != nil {
		return fmt.Sprintf("consistency proof failed: the server gave none from %d to %d: %v", old.Size, cur.Size, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cur.Size, resp.GetHashes(), old.Hash, cur.Hash); err != nil {
		return fmt.Sprintf("consistency proof failed: checkpoint %d is not an extension of the saved checkpoint %d (history was rewritten): %v", cur.Size, old.Size, err)
	}
	return "ok"
}

func finishVerify(g *globals, format string, res verifyResult) error {
	res.OK = res.Problems == 0
	if format == "json" {
		if err := writeJSON(g.stdout, res); err != nil {
			return err
		}
	} else {
		if res.OK {
			fmt.Fprintf(g.stdout, "OK: %d entries (%d pruned) recomputed; they match signed checkpoint %d", res.Entries, res.Pruned, res.CheckpointSize)
			if res.SinceSize != nil {
				fmt.Fprintf(g.stdout, ", which is consistent with saved checkpoint %d", *res.SinceSize)
			}
			fmt.Fprintln(g.stdout)
		} else {
			fmt.Fprintf(g.stdout, "FAILED: %d problem(s) in %d entries checked against checkpoint %d:\n", res.Problems, res.Entries, res.CheckpointSize)
			for _, f := range res.Findings {
				fmt.Fprintln(g.stdout, "  -", f)
			}
		}
	}
	if !res.OK {
		return &VerificationError{Problems: res.Problems}
	}
	return nil
}

// exportLeaves streams the log's leaves from index from.
func exportLeaves(ctx context.Context, c auditv1.AuditServiceClient, from uint64, fn func(verifier.Leaf) error) error {
	stream, err := c.Export(ctx, &auditv1.ExportRequest{FromIndex: from})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, lf := range msg.GetLeaves() {
			if err := fn(verifier.Leaf{Index: lf.GetIndex(), Data: lf.GetData(), Hash: lf.GetLeafHash()}); err != nil {
				return err
			}
		}
	}
}

// InclusionBundle is what `ledger prove` prints: everything needed to check
// offline, with github.com/transparency-dev/merkle and formats alone, that
// an entry is in the log: verify Checkpoint with VerifierKey (note), then
// proof.VerifyInclusion(rfc6962.DefaultHasher, LeafIndex, TreeSize,
// rfc6962.DefaultHasher.HashLeaf(LeafData), Hashes, root of Checkpoint).
type InclusionBundle struct {
	Serial      string   `json:"serial"`
	LeafIndex   uint64   `json:"leaf_index"`
	TreeSize    uint64   `json:"tree_size"`
	LeafData    []byte   `json:"leaf_data"`
	LeafHash    []byte   `json:"leaf_hash"`
	Hashes      [][]byte `json:"hashes"`
	Checkpoint  string   `json:"checkpoint"`
	Origin      string   `json:"origin"`
	VerifierKey string   `json:"verifier_key"`
}

func ledgerProve(ctx context.Context, g *globals, args []string) error {
	fs := newFlags(g, "ledger prove")
	key := logKeyFlag(fs)
	out := fs.String("o", "json", "output format: json (the proof bundle) or table")
	serial, err := parseSerial(fs, args)
	if err != nil {
		return err
	}
	if err := checkOutput("ledger prove", *out); err != nil {
		return err
	}
	c, done, err := auditClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	resp, _, vkey, err := latest(ctx, g, c, *key)
	if err != nil {
		return err
	}
	got, err := c.Get(ctx, &auditv1.GetRequest{Serial: serial})
	if err != nil {
		return err
	}
	p := got.GetProof()
	b := InclusionBundle{
		Serial: got.GetEvent().GetSerial(), LeafIndex: p.GetLeafIndex(), TreeSize: p.GetTreeSize(),
		LeafData: got.GetEvent().GetData(), LeafHash: rfc6962.DefaultHasher.HashLeaf(got.GetEvent().GetData()),
		Hashes: p.GetHashes(), Checkpoint: string(p.GetCheckpoint()), Origin: resp.GetOrigin(), VerifierKey: vkey,
	}
	cp, err := verifier.OpenCheckpoint(p.GetCheckpoint(), b.Origin, vkey)
	if err != nil || cp.Size != b.TreeSize {
		fmt.Fprintln(g.stderr, "castellanctl: the proof's checkpoint is not validly signed by the log key")
		return &VerificationError{Problems: 1}
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, b.LeafIndex, b.TreeSize, b.LeafHash, b.Hashes, cp.Hash); err != nil {
		fmt.Fprintf(g.stderr, "castellanctl: the server's inclusion proof does not verify: %v\n", err)
		return &VerificationError{Problems: 1}
	}
	if *out == "json" {
		return writeJSON(g.stdout, b)
	}
	_, err = fmt.Fprintf(g.stdout, "entry %d (serial %s) is in the log: inclusion proof of %d hashes verifies against signed checkpoint %d\n",
		b.LeafIndex, b.Serial, len(b.Hashes), b.TreeSize)
	return err
}

// exportLine is one JSON line of `ledger export`.
type exportLine struct {
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

func ledgerExport(ctx context.Context, g *globals, args []string) error {
	fs := newFlags(g, "ledger export")
	from := fs.Uint64("from", 0, "first ledger index to export")
	out := fs.String("o", "json", "output format: json (JSON lines, one event per line)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("ledger export: unexpected arguments %q", fs.Args())
	}
	if *out != "json" {
		return usagef("ledger export: only -o json (JSON lines) is supported")
	}
	c, done, err := auditClient(ctx, g)
	if err != nil {
		return err
	}
	defer done()
	w := bufio.NewWriter(g.stdout)
	enc := json.NewEncoder(w)
	err = exportLeaves(ctx, c, *from, func(lf verifier.Leaf) error {
		return enc.Encode(lineOf(lf))
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func lineOf(lf verifier.Leaf) exportLine {
	line := exportLine{Index: lf.Index, LeafHash: base64.StdEncoding.EncodeToString(lf.Hash)}
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
func ledgerKeygen(g *globals, args []string) error {
	fs := newFlags(g, "ledger keygen")
	out := fs.String("out", "", "file to create (mode 0600; must not exist)")
	td := fs.String("trust-domain", "cluster.local", "the trust domain whose log the key signs")
	origin := fs.String("origin", "", "the log's origin (first line of its checkpoints; the key is named after it; default <trust-domain>/castellan/ledger, as castellan-server names a new log)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *out == "" {
		return usagef("ledger keygen: need --out FILE and no arguments")
	}
	if *origin == "" {
		*origin = logkey.OriginFor(*td)
	}
	vkey, err := logkey.GenerateKeyFile(*out, *origin)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.stdout, "%s\n", vkey)
	return err
}
