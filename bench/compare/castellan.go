package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/castellan-dev/castellan/agent/client"
	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/freeport"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// castellanTD and castellanID: the trust domain and the one workload
// identity the benchmark asks Castellan for.
var (
	castellanTD = spiffeid.RequireTrustDomainFromString("cluster.local")
	castellanID = spiffeid.RequireFromPath(castellanTD, "/ns/bench/sa/workload")
)

// castellanSide is a castellan-server process and a connection to it with
// the SVID of an agent holding the benchmark's registration entry.
type castellanSide struct {
	proc *process
	conn *grpc.ClientConn
	ca   cav1.CertificateAuthorityServiceClient
}

// startCastellan starts castellan-server in dir with its ledger (bbolt,
// synced) and its quotas out of the way (SPIRE's rate limit is off too),
// joins an agent with a join token and gives its node the entry.
func startCastellan(ctx context.Context, bin, dir string) (*castellanSide, error) {
	dataDir := filepath.Join(dir, "castellan")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	const unlimited = "1000000000"
	proc, err := start("castellan-server", filepath.Join(dir, "castellan.log"), bin,
		"--trust-domain", castellanTD.Name(), "--data-dir", dataDir, "--listen", addr, "--http-listen", httpAddr,
		"--default-ttl", "1h", "--quota-node-burst", unlimited, "--quota-node-per-hour", unlimited,
		"--quota-identity-per-ttl", unlimited)
	if err != nil {
		return nil, err
	}
	s := &castellanSide{proc: proc}
	if err := s.join(ctx, addr, dataDir, filepath.Join(dir, "castellan-agent")); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// join creates a join token and the entry through the admin socket, and
// attests an agent for node "bench-node" with agent/client.
func (s *castellanSide) join(ctx context.Context, addr, dataDir, agentDir string) error {
	admin, err := grpc.NewClient("unix://"+filepath.Join(dataDir, "admin.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer admin.Close()
	ac := adminv1.NewAdminServiceClient(admin)
	var token string
	err = retry(s.proc, 60*time.Second, "castellan-server admin API", func() error {
		resp, err := ac.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Node: "bench-node"})
		token = resp.GetToken()
		return err
	})
	if err != nil {
		return err
	}
	_, err = ac.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &cav1.Entry{SpiffeId: castellanID.String(), Node: "bench-node",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}}})
	if err != nil {
		return fmt.Errorf("castellan: create entry: %w", err)
	}
	bundle, err := client.LoadBundle(castellanTD, filepath.Join(dataDir, "bundle.pem"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		return err
	}
	agent, err := client.New(client.Config{Address: addr, TrustDomain: castellanTD, Bundle: bundle, DataDir: agentDir})
	if err != nil {
		return err
	}
	defer agent.Close()
	if err := agent.Bootstrap(ctx, token); err != nil {
		return fmt.Errorf("castellan: attest: %w", err)
	}
	tc := tlsconfig.MTLSClientConfig(agent.AgentSVID(), bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(castellanTD, "/castellan/server")))
	if s.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc))); err != nil {
		return err
	}
	s.ca = cav1.NewCertificateAuthorityServiceClient(s.conn)
	return nil
}

func (s *castellanSide) name() string     { return "Castellan" }
func (s *castellanSide) server() *process { return s.proc }

// issue asks for one SVID per CSR: SignX509SVID for one, else one
// BatchSignX509SVID.
func (s *castellanSide) issue(ctx context.Context, csrs [][]byte) error {
	if len(csrs) == 1 {
		resp, err := s.ca.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csrs[0]})
		if err == nil && len(resp.GetSvid().GetCertChain()) == 0 {
			err = fmt.Errorf("castellan: no SVID in the answer")
		}
		return err
	}
	req := &cav1.BatchSignX509SVIDRequest{Requests: make([]*cav1.SignX509SVIDRequest, len(csrs))}
	for i, c := range csrs {
		req.Requests[i] = &cav1.SignX509SVIDRequest{Csr: c}
	}
	resp, err := s.ca.BatchSignX509SVID(ctx, req)
	if err != nil {
		return err
	}
	for _, r := range resp.GetResults() {
		if e := r.GetError(); e != nil {
			return fmt.Errorf("castellan: item refused: code %d: %s", e.GetCode(), e.GetMessage())
		}
	}
	return nil
}

func (s *castellanSide) close() {
	if s.conn != nil {
		s.conn.Close()
	}
	s.proc.stop()
}
