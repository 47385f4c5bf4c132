package logcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Prove proves each certificate's inclusion in a witnessed checkpoint
// that extends the accepted one, asking the CA again every Poll until all
// are proven, one is refused for good, or Wait has passed. It returns one
// error per certificate, nil for a proven one.
func (c *Checker) Prove(ctx context.Context, certs []Cert) []error {
	errs := make([]error, len(certs))
	if len(certs) > maxCerts {
		for i := maxCerts; i < len(certs); i++ {
			errs[i] = fmt.Errorf("logcheck: more than %d certificates in one proof", maxCerts)
		}
		certs = certs[:maxCerts]
	}
	todo := map[uint64][]int{} // log index -> positions in certs
	for i, crt := range certs {
		if crt.Index == nil {
			errs[i] = ErrNotLogged
			continue
		}
		todo[*crt.Index] = append(todo[*crt.Index], i)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Wait)
	defer cancel()
	var last error
	for len(todo) > 0 {
		if err := c.round(ctx, certs, todo, errs); err != nil {
			last = err
			if errors.Is(err, ErrFork) {
				break
			}
		}
		if len(todo) == 0 || !c.pause(ctx) {
			break
		}
	}
	for _, pos := range todo {
		for _, i := range pos {
			errs[i] = c.unproven(last)
		}
	}
	c.count(errs)
	return errs
}

// unproven is the error of a certificate still unproven at the end.
func (c *Checker) unproven(last error) error {
	if last != nil && errors.Is(last, ErrFork) {
		return last
	}
	if last != nil {
		return fmt.Errorf("%w within %s: %w", ErrNotWitnessed, c.cfg.Wait, last)
	}
	return fmt.Errorf("%w within %s", ErrNotWitnessed, c.cfg.Wait)
}

// pause waits Poll; false when ctx ended first.
func (c *Checker) pause(ctx context.Context) bool {
	t := time.NewTimer(c.cfg.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// round asks the CA once and settles the certificates it proves or
// refuses for good, removing them from todo.
func (c *Checker) round(ctx context.Context, certs []Cert, todo map[uint64][]int, errs []error) error {
	from := c.Accepted()
	req := &cav1.GetLogProofRequest{FromSize: from}
	for idx := range todo {
		req.LogIndexes = append(req.LogIndexes, idx)
	}
	resp, err := c.cfg.Source.GetLogProof(ctx, req)
	if err != nil {
		return fmt.Errorf("asking the CA for proofs: %w", err)
	}
	cp, err := c.accept(resp, from)
	if err != nil {
		return err
	}
	for _, inc := range resp.GetInclusions() {
		pos, ok := todo[inc.GetLogIndex()]
		if !ok || inc.GetLogIndex() >= cp.Size {
			continue // not asked for, or proven already: ignore
		}
		for _, i := range pos {
			errs[i] = verifyInclusion(cp, inc, certs[i].DER)
		}
		delete(todo, inc.GetLogIndex())
	}
	if len(todo) > 0 {
		return fmt.Errorf("the latest witnessed checkpoint (size %d) does not cover log index %d yet", cp.Size, minKey(todo))
	}
	return nil
}

func minKey(m map[uint64][]int) uint64 {
	first := true
	var lo uint64
	for k := range m {
		if first || k < lo {
			lo, first = k, false
		}
	}
	return lo
}

// verifyInclusion checks that inc's entry holds der at its index and is
// in cp's tree.
func verifyInclusion(cp *log.Checkpoint, inc *cav1.LogInclusion, der []byte) error {
	if err := checkEntry(inc.GetEntry(), inc.GetLogIndex(), der); err != nil {
		return fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(inc.GetEntry())
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, inc.GetLogIndex(), cp.Size, leaf, inc.GetProof(), cp.Hash); err != nil {
		return fmt.Errorf("%w: entry %d is not in the witnessed tree of size %d: %w", ErrBadProof, inc.GetLogIndex(), cp.Size, err)
	}
	return nil
}

// accept verifies resp's checkpoint against the policy and the accepted
// checkpoint of size from (the consistency proof starts there), stores it
// if it is larger, and returns it.
func (c *Checker) accept(resp *cav1.GetLogProofResponse, from uint64) (*log.Checkpoint, error) {
	v, err := c.cfg.Policy.Verify(resp.GetCheckpoint(), c.cfg.Origin, c.logKey, c.cfg.Clock.Now())
	if err != nil {
		c.metrics.refused.Inc()
		return nil, fmt.Errorf("the CA's checkpoint is refused: %w", err)
	}
	cp := &v.Checkpoint
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.forked != nil {
		return nil, c.forked
	}
	old := c.accepted
	switch {
	case old == nil:
	case cp.Size < old.Size:
		return nil, fmt.Errorf("the CA's witnessed checkpoint (size %d) is older than the accepted one (size %d); not rolling back", cp.Size, old.Size)
	case cp.Size == old.Size:
		if !bytes.Equal(cp.Hash, old.Hash) {
			return nil, c.fork(fmt.Errorf("%w: two witnessed checkpoints of size %d have different roots", ErrFork, cp.Size))
		}
		return cp, nil
	case old.Size != from:
		return nil, fmt.Errorf("the accepted checkpoint changed during the request; asking again")
	default:
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cp.Size, resp.GetConsistencyProof(), old.Hash, cp.Hash); err != nil {
			return nil, c.fork(fmt.Errorf("%w: the witnessed checkpoint of size %d is not consistent with the accepted one of size %d: %w", ErrFork, cp.Size, old.Size, err))
		}
	}
	if err := c.cfg.Store.PutLogCheckpoint(resp.GetCheckpoint()); err != nil {
		return nil, fmt.Errorf("logcheck: %w", err)
	}
	c.accepted = cp
	c.metrics.size.Set(float64(cp.Size))
	return cp, nil
}

// fork records a fork for good and says so loudly; called with c.mu held.
func (c *Checker) fork(err error) error {
	c.forked = err
	c.metrics.forks.Inc()
	c.log.Error("ISSUANCE LOG FORK: the CA presented a witnessed checkpoint that contradicts the one this agent accepted; no new certificate is accepted until an operator investigates and restarts the agent",
		"error", err.Error())
	return err
}
