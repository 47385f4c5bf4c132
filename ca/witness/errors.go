package witness

import (
	"errors"
	"fmt"
	"strings"
)

// Why a witness did not cosign; test with errors.Is on a Submit error.
var (
	// ErrInconsistent: the witness refused the checkpoint as inconsistent
	// with the tree it already cosigned (422): the consistency proof did
	// not verify, or the root differs at the same size. Either the log
	// forked (two views of one log) or its storage was rewritten.
	ErrInconsistent = errors.New("inconsistent with the tree the witness cosigned")
	// ErrStale: the witness already cosigned a larger tree of the log than
	// the checkpoint's (another replica submitted a newer checkpoint).
	ErrStale = errors.New("the witness cosigned a larger tree")
	// ErrUnknownLog: the witness does not witness this log's origin (404).
	ErrUnknownLog = errors.New("the witness does not know the log's origin")
	// ErrForbidden: the checkpoint has no signature by the key the
	// witness trusts for the origin (403).
	ErrForbidden = errors.New("the witness does not trust the checkpoint's signature")
	// ErrRejected: the witness refused the request itself (400, other 4xx).
	ErrRejected = errors.New("the witness rejected the request")
	// ErrUnavailable: no answer in time, a network failure, 429 or 5xx.
	ErrUnavailable = errors.New("the witness is unavailable")
	// ErrBadResponse: the witness answered, but not with a valid
	// cosignature of this checkpoint by its key: an oversized or malformed
	// body, a signature by another key or over another checkpoint, a
	// timestamp out of range. The answer is discarded.
	ErrBadResponse = errors.New("the witness's answer is not a valid cosignature")
)

// Refusal is why one witness did not cosign.
type Refusal struct {
	Witness string
	Err     error
}

// QuorumError is Submit's error when fewer witnesses than the policy's
// quorum cosigned. errors.Is sees through it to every refusal's error.
type QuorumError struct {
	Size     uint64   // the checkpoint's tree size
	Policy   string   // the policy, as Policy.String
	Quorum   int      // cosignatures required
	Cosigned []string // witnesses that cosigned
	Refusals []Refusal
}

func (e *QuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "witness: checkpoint of size %d got %d of the %d cosignatures policy %s requires",
		e.Size, len(e.Cosigned), e.Quorum, e.Policy)
	for _, r := range e.Refusals {
		fmt.Fprintf(&b, "; %s: %v", r.Witness, r.Err)
	}
	return b.String()
}

// Unwrap returns the refusals' errors.
func (e *QuorumError) Unwrap() []error {
	errs := make([]error, len(e.Refusals))
	for i, r := range e.Refusals {
		errs[i] = r.Err
	}
	return errs
}
