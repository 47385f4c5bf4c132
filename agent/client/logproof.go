package client

import (
	"context"
	"fmt"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
)

// GetLogProof asks the CA for its latest witnessed checkpoint and proofs
// (agent/logcheck verifies them; nothing here is trusted).
func (c *Client) GetLogProof(ctx context.Context, req *cav1.GetLogProofRequest) (*cav1.GetLogProofResponse, error) {
	ca, err := c.ca()
	if err != nil {
		return nil, err
	}
	resp, err := ca.GetLogProof(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("client: log proof: %w", err)
	}
	return resp, nil
}
