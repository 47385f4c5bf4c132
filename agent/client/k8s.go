package client

import (
	"context"
	"fmt"
	"os"
	"strings"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// BootstrapK8s is Bootstrap for an agent running in a Kubernetes pod: if
// the persisted agent SVID is no longer valid, it attests with the
// projected service-account token (audience castellan-ca) read from
// tokenFile. The file is read on every call, since the kubelet refreshes
// it.
func (c *Client) BootstrapK8s(ctx context.Context, tokenFile string) error {
	c.mu.Lock()
	svid := c.svid
	c.mu.Unlock()
	if svid != nil && c.cfg.Clock.Now().Before(svid.Certificates[0].NotAfter) {
		c.log.Info("using persisted agent SVID", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
		return nil
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("client: reading the service-account token (--k8s-token-file): %w", err)
	}
	token := strings.TrimSpace(string(b))
	key, csr, err := newCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	tlsConf := tlsconfig.TLSClientConfig(c, tlsconfig.AuthorizeID(c.serverID))
	conn, err := grpc.NewClient(c.cfg.Address, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return fmt.Errorf("client: dial %s: %w", c.cfg.Address, err)
	}
	defer conn.Close()
	resp, err := cav1.NewCertificateAuthorityServiceClient(conn).AttestAgent(ctx,
		&cav1.AttestAgentRequest{Attestation: &cav1.AttestAgentRequest_K8SSat{K8SSat: token}, Csr: csr})
	if err != nil {
		return fmt.Errorf("client: attest with Kubernetes service-account token: %w", err)
	}
	got, err := svidFromProto(resp.Svid, key)
	if err != nil {
		return err
	}
	if b, err := BundleFromProto(resp.Bundle); err == nil {
		c.SetBundle(b)
	}
	if err := c.storeSVID(got); err != nil {
		return err
	}
	c.log.Info("attested with Kubernetes service-account token", "spiffe_id", got.ID.String(), "not_after", got.Certificates[0].NotAfter)
	return nil
}
