// Package verifycmd holds castellanctl's checks of the issuance ledger:
// ledger checkpoint, prove and verify. They check what the server says (or
// what a stopped server's ledger file holds, read by a FileVerifier the
// caller gives) against the log's signed checkpoints, inclusion and
// consistency proofs, with ca/verifier. The package links no storage and no
// Kubernetes client, so neither does the verification path.
package verifycmd

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"

	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// FileVerifier verifies a stopped server's ledger file with the log's
// verifier key vkey, and against any extra signed checkpoints
// (ca/ledger.VerifyFile).
type FileVerifier func(path, vkey string, extra ...[]byte) (verifier.Report, error)

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
func latest(ctx context.Context, g *cli.Globals, c auditv1.AuditServiceClient, pinned string) (*auditv1.CheckpointResponse, *log.Checkpoint, string, error) {
	resp, err := c.Checkpoint(ctx, &auditv1.CheckpointRequest{})
	if err != nil {
		return nil, nil, "", err
	}
	vkey := pinned
	if vkey == "" {
		vkey = resp.GetVerifierKey()
		fmt.Fprintf(g.Stderr, "castellanctl: warning: trusting the log key the server reports (%s); pin it with --log-key\n", vkey)
	}
	cp, err := verifier.OpenCheckpoint(resp.GetCheckpoint(), resp.GetOrigin(), vkey)
	if err != nil {
		fmt.Fprintf(g.Stderr, "castellanctl: the server's checkpoint does not verify with log key %s: %v\n", vkey, err)
		return nil, nil, "", &VerificationError{Problems: 1}
	}
	return resp, cp, vkey, nil
}

// Checkpoint runs `castellanctl ledger checkpoint`.
func Checkpoint(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("ledger checkpoint")
	save := fs.String("save", "", "also write the signed checkpoint to this file (for a later verify --since)")
	key := logKeyFlag(fs)
	out := cli.OutputFlag(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("ledger checkpoint: unexpected arguments %q", fs.Args())
	}
	if err := cli.CheckOutput("ledger checkpoint", *out); err != nil {
		return err
	}
	c, done, err := g.AuditClient(ctx)
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
		return cli.WriteJSON(g.Stdout, map[string]any{
			"origin": cp.Origin, "size": cp.Size, "root_hash": base64.StdEncoding.EncodeToString(cp.Hash),
			"verifier_key": vkey, "checkpoint": string(resp.GetCheckpoint()),
		})
	}
	_, err = g.Stdout.Write(resp.GetCheckpoint())
	return err
}

// Result is the -o json output of ledger verify.
type Result struct {
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

// Verify runs `castellanctl ledger verify`; readFile verifies a file
// given with --db.
func Verify(ctx context.Context, g *cli.Globals, args []string, readFile FileVerifier) error {
	fs := g.NewFlags("ledger verify")
	since := fs.String("since", "", "a checkpoint saved earlier (ledger checkpoint --save); also prove the log only grew since")
	db := fs.String("db", "", "verify this ledger file offline instead of asking the server (the server must be stopped; needs --log-key)")
	key := logKeyFlag(fs)
	out := cli.OutputFlag(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("ledger verify: unexpected arguments %q", fs.Args())
	}
	if err := cli.CheckOutput("ledger verify", *out); err != nil {
		return err
	}
	if *db != "" {
		return verifyFile(g, readFile, *db, *key, *since, *out)
	}
	return verifyServer(ctx, g, *key, *since, *out)
}

// verifyServer verifies the server's log: every leaf it exports against
// its latest checkpoint (opened with the pinned key, or the server's), and
// with since, that the log only grew since that saved checkpoint.
func verifyServer(ctx context.Context, g *cli.Globals, key, since, out string) error {
	c, done, err := g.AuditClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, cp, vkey, err := latest(ctx, g, c, key)
	if err != nil {
		return err
	}
	res := Result{CheckpointSize: cp.Size, Findings: []string{}}
	cps := []*log.Checkpoint{cp}
	var old *log.Checkpoint
	if since != "" {
		raw, err := os.ReadFile(since)
		if err != nil {
			return fmt.Errorf("castellanctl: --since: %w", err)
		}
		if old, err = verifier.OpenCheckpoint(raw, resp.GetOrigin(), vkey); err != nil {
			res.Findings = append(res.Findings, fmt.Sprintf("checkpoint %s is not signed by the log key %s: %v", since, vkey, err))
			res.Problems++
			return finishVerify(g, out, res)
		}
		res.SinceSize = &old.Size
		cps = append(cps, old)
	}
	tv := verifier.NewTree(cps...)
	if err := ExportLeaves(ctx, c, 0, func(lf verifier.Leaf) error { tv.Add(lf); return nil }); err != nil {
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
	return finishVerify(g, out, res)
}

// verifyFile verifies a stopped server's ledger file directly.
func verifyFile(g *cli.Globals, readFile FileVerifier, path, vkey, since, format string) error {
	if vkey == "" {
		return cli.Usagef("ledger verify --db needs --log-key (the file's own key cannot vouch for it)")
	}
	var extra [][]byte
	if since != "" {
		raw, err := os.ReadFile(since)
		if err != nil {
			return fmt.Errorf("castellanctl: --since: %w", err)
		}
		extra = append(extra, raw)
	}
	rep, err := readFile(path, vkey, extra...)
	if err != nil {
		return err
	}
	res := Result{Entries: rep.Entries, Pruned: rep.Pruned, Problems: rep.ProblemCount,
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

func finishVerify(g *cli.Globals, format string, res Result) error {
	res.OK = res.Problems == 0
	if format == "json" {
		if err := cli.WriteJSON(g.Stdout, res); err != nil {
			return err
		}
	} else {
		if res.OK {
			fmt.Fprintf(g.Stdout, "OK: %d entries (%d pruned) recomputed; they match signed checkpoint %d", res.Entries, res.Pruned, res.CheckpointSize)
			if res.SinceSize != nil {
				fmt.Fprintf(g.Stdout, ", which is consistent with saved checkpoint %d", *res.SinceSize)
			}
			fmt.Fprintln(g.Stdout)
		} else {
			fmt.Fprintf(g.Stdout, "FAILED: %d problem(s) in %d entries checked against checkpoint %d:\n", res.Problems, res.Entries, res.CheckpointSize)
			for _, f := range res.Findings {
				fmt.Fprintln(g.Stdout, "  -", f)
			}
		}
	}
	if !res.OK {
		return &VerificationError{Problems: res.Problems}
	}
	return nil
}

// ExportLeaves streams the log's leaves from index from.
func ExportLeaves(ctx context.Context, c auditv1.AuditServiceClient, from uint64, fn func(verifier.Leaf) error) error {
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

// Prove runs `castellanctl ledger prove`.
func Prove(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("ledger prove")
	key := logKeyFlag(fs)
	out := fs.String("o", "json", "output format: json (the proof bundle) or table")
	serial, err := cli.ParseOne(fs, args, "SERIAL")
	if err != nil {
		return err
	}
	if err := cli.CheckOutput("ledger prove", *out); err != nil {
		return err
	}
	c, done, err := g.AuditClient(ctx)
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
		fmt.Fprintln(g.Stderr, "castellanctl: the proof's checkpoint is not validly signed by the log key")
		return &VerificationError{Problems: 1}
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, b.LeafIndex, b.TreeSize, b.LeafHash, b.Hashes, cp.Hash); err != nil {
		fmt.Fprintf(g.Stderr, "castellanctl: the server's inclusion proof does not verify: %v\n", err)
		return &VerificationError{Problems: 1}
	}
	if *out == "json" {
		return cli.WriteJSON(g.Stdout, b)
	}
	_, err = fmt.Fprintf(g.Stdout, "entry %d (serial %s) is in the log: inclusion proof of %d hashes verifies against signed checkpoint %d\n",
		b.LeafIndex, b.Serial, len(b.Hashes), b.TreeSize)
	return err
}
