package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/internal/freeport"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

var spireTD = spiffeid.RequireTrustDomainFromString("example.org")

// spireConfig is spire-server's configuration: SQLite datastore, in-memory
// P-256 CA key, join-token attestation, audit log off and both rate
// limits off, X509-SVIDs of one hour as on the Castellan side.
const spireConfig = `server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = "%s"
    trust_domain = "example.org"
    data_dir = "%s"
    log_level = "WARN"
    ca_key_type = "ec-p256"
    default_x509_svid_ttl = "1h"
    audit_log_enabled = false
    ratelimit {
        attestation = false
        signing = false
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "%s"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
}
`

// spireSide is a spire-server process and a connection to it with the
// SVID of an agent whose registration entry the benchmark asks for.
type spireSide struct {
	proc    *process
	conn    *grpc.ClientConn
	svid    svidv1.SVIDClient
	entryID string
}

// startSpire starts spire-server in dir, attests an agent with a join
// token over SPIRE's agent API and creates the workload entry under it.
func startSpire(ctx context.Context, bin, dir string) (*spireSide, error) {
	data := filepath.Join(dir, "spire")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	port, err := freeport.Port()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(data, "api.sock")
	conf := filepath.Join(data, "server.conf")
	body := fmt.Sprintf(spireConfig, port, sock, data, filepath.Join(data, "datastore.sqlite3"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	proc, err := start("spire-server", filepath.Join(dir, "spire.log"), bin, "run", "-config", conf)
	if err != nil {
		return nil, err
	}
	s := &spireSide{proc: proc}
	if err := s.join(ctx, "127.0.0.1:"+strconv.Itoa(port), sock); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// join attests an agent and creates the entry, through the admin socket.
func (s *spireSide) join(ctx context.Context, addr, sock string) error {
	admin, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer admin.Close()
	var bundle *x509bundle.Bundle
	err = retry(s.proc, 60*time.Second, "spire-server admin API", func() error {
		bundle, err = spireBundle(ctx, bundlev1.NewBundleClient(admin))
		return err
	})
	if err != nil {
		return err
	}
	tok, err := agentv1.NewAgentClient(admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		return fmt.Errorf("spire: create join token: %w", err)
	}
	agent, err := spireAttest(ctx, addr, bundle, tok.GetValue())
	if err != nil {
		return err
	}
	if s.entryID, err = spireEntry(ctx, entryv1.NewEntryClient(admin), tok.GetValue()); err != nil {
		return err
	}
	tc := tlsconfig.MTLSClientConfig(agent, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(spireTD, "/spire/server")))
	if s.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc))); err != nil {
		return err
	}
	s.svid = svidv1.NewSVIDClient(s.conn)
	// SPIRE authorizes from an entry cache it reloads every few seconds:
	// wait until the new entry is in it.
	csr, err := workloadCSR(castellanID)
	if err != nil {
		return err
	}
	return retry(s.proc, 60*time.Second, "spire-server entry cache", func() error {
		return s.issue(ctx, [][]byte{csr})
	})
}

// spireBundle reads the trust bundle from the admin API.
func spireBundle(ctx context.Context, c bundlev1.BundleClient) (*x509bundle.Bundle, error) {
	b, err := c.GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, a := range b.GetX509Authorities() {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, err
		}
		roots = append(roots, cert)
	}
	if len(roots) == 0 {
		return nil, errors.New("spire: empty bundle")
	}
	return x509bundle.FromX509Authorities(spireTD, roots), nil
}

// spireAttest exchanges the join token for an agent SVID (AttestAgent).
func spireAttest(ctx context.Context, addr string, bundle *x509bundle.Bundle, token string) (*x509svid.SVID, error) {
	tc := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(spireTD, "/spire/server")))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	key, err := client.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	if err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("spire: attest: %w", err)
	}
	_ = stream.CloseSend()
	return x509svid.ParseRaw(concat(resp.GetResult().GetSvid().GetCertChain()), mustPKCS8(key))
}

// spireEntry creates the workload entry under the agent of token.
func spireEntry(ctx context.Context, c entryv1.EntryClient, token string) (string, error) {
	resp, err := c.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
		ParentId:  &types.SPIFFEID{TrustDomain: spireTD.Name(), Path: "/spire/agent/join_token/" + token},
		SpiffeId:  &types.SPIFFEID{TrustDomain: spireTD.Name(), Path: castellanID.Path()},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:1000"}},
	}}})
	if err != nil {
		return "", fmt.Errorf("spire: create entry: %w", err)
	}
	r := resp.GetResults()[0]
	if r.GetStatus().GetCode() != 0 {
		return "", fmt.Errorf("spire: create entry: %s", r.GetStatus().GetMessage())
	}
	return r.GetEntry().GetId(), nil
}

func (s *spireSide) name() string     { return "SPIRE" }
func (s *spireSide) server() *process { return s.proc }

// issue asks for one SVID per CSR in one BatchNewX509SVID, the only way a
// SPIRE agent obtains X509-SVIDs.
func (s *spireSide) issue(ctx context.Context, csrs [][]byte) error {
	req := &svidv1.BatchNewX509SVIDRequest{Params: make([]*svidv1.NewX509SVIDParams, len(csrs))}
	for i, c := range csrs {
		req.Params[i] = &svidv1.NewX509SVIDParams{EntryId: s.entryID, Csr: c}
	}
	resp, err := s.svid.BatchNewX509SVID(ctx, req)
	if err != nil {
		return err
	}
	for _, r := range resp.GetResults() {
		if st := r.GetStatus(); st.GetCode() != 0 || len(r.GetSvid().GetCertChain()) == 0 {
			return fmt.Errorf("spire: item refused: code %d: %s", st.GetCode(), st.GetMessage())
		}
	}
	return nil
}

func (s *spireSide) close() {
	if s.conn != nil {
		s.conn.Close()
	}
	s.proc.stop()
}
