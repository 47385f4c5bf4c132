package client

import (
	"context"
	"fmt"
	"os"
	"strings"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
)

// BootstrapK8s is Bootstrap for an agent running in a Kubernetes pod: if
// the persisted agent SVID is no longer valid, it attests with the
// projected service-account token (audience castellan-ca) read from
// tokenFile. The file is read on every call, since the kubelet refreshes
// it.
func (c *Client) BootstrapK8s(ctx context.Context, tokenFile string) error {
	if _, ok := c.usePersisted(); ok {
		return nil
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("client: reading the service-account token (--k8s-token-file): %w", err)
	}
	token := strings.TrimSpace(string(b))
	return c.attest(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_K8SSat{K8SSat: token}}, "Kubernetes service-account token")
}
