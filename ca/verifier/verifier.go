// Package verifier checks a Castellan ledger as an outside auditor does:
// it opens signed checkpoints with the log's pinned verifier key, and
// recomputes the RFC 6962 Merkle tree from the log's leaves to compare it
// with them. It needs neither the CA nor its store: it links no database
// driver and no Kubernetes client (a test holds it to that), so that
// `castellanctl ledger verify` and third-party auditors can link it alone.
// Leaves come from wherever the auditor gets them: the audit API's Export
// stream, the C2SP tiles under /log/, or a ledger file (ca/ledger's
// VerifyFile reads one and feeds a Tree).
package verifier

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// maxFindings bounds the findings a Report lists; ProblemCount counts all.
const maxFindings = 100

// maxGap bounds the run of missing indices a Tree fills in.
const maxGap = 1 << 24

// hashSize is the size of an RFC 6962 SHA-256 hash.
const hashSize = 32

// rangeFactory builds compact ranges with RFC 6962 node hashing.
var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// Leaf is one position of the log as an auditor receives it: the stored
// entry bytes (nil when pruned) and the leaf hash the log claims for it.
type Leaf struct {
	Index uint64
	Data  []byte
	Hash  []byte
}

// OpenCheckpoint verifies a signed checkpoint (a C2SP tlog-checkpoint
// note) against the log's verifier key vkey and origin ("": the key's
// name), and returns its contents.
func OpenCheckpoint(signed []byte, origin, vkey string) (*log.Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("verifier: log verifier key: %w", err)
	}
	if origin == "" {
		origin = v.Name()
	}
	cp, _, _, err := log.ParseCheckpoint(signed, origin, v)
	if err != nil {
		return nil, fmt.Errorf("verifier: checkpoint: %w", err)
	}
	return cp, nil
}

// Report is the outcome of recomputing a log's tree from its leaves.
type Report struct {
	// Entries is how many leaves were read; Pruned how many had no data.
	Entries, Pruned uint64
	// Root is the root recomputed over all leaves read.
	Root []byte
	// Checkpoint is the size of the stored checkpoint a file was checked
	// against (0 when there was none; set by whoever read the file).
	Checkpoint uint64
	// Findings lists the first problems, in words; ProblemCount counts all.
	Findings     []string
	ProblemCount int
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return r.ProblemCount == 0 }

// Addf records a problem, described in words an operator can act on.
func (r *Report) Addf(format string, args ...any) {
	r.ProblemCount++
	if len(r.Findings) < maxFindings {
		r.Findings = append(r.Findings, fmt.Sprintf(format, args...))
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// entryIndex reads the index an encoded ledger entry names, as
// encoding/json (and so ledger.DecodeEntry) reads it: the last "index" key,
// matched case-insensitively. Entries start with {"v":1,"index":N, so the
// fast path reads N without decoding the entry, but only when nothing after
// it could be another index key: no escape, no non-ASCII byte, no "index"
// in any case. Anything else is decoded in full.
func entryIndex(data []byte) (uint64, bool) {
	if n, ok := fastIndex(data); ok {
		return n, true
	}
	var hdr struct {
		Index *uint64 `json:"index"`
	}
	if err := json.Unmarshal(data, &hdr); err != nil || hdr.Index == nil {
		return 0, false
	}
	return *hdr.Index, true
}

// fastIndex reads N from a valid JSON entry starting {"v":1,"index":N, when
// the rest of the entry cannot hold another index key.
func fastIndex(data []byte) (uint64, bool) {
	const prefix = `{"v":1,"index":`
	rest, ok := bytes.CutPrefix(data, []byte(prefix))
	if !ok || !json.Valid(data) {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end <= 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != string(rest[:end]) {
		return 0, false // not a JSON number as the ledger writes it
	}
	tail := rest[end:]
	for _, c := range tail {
		if c == '\\' || c >= 0x80 {
			return 0, false
		}
	}
	if bytes.Contains(bytes.ToLower(tail), []byte(`"index"`)) {
		return 0, false
	}
	return n, true
}
