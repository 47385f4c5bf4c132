package integration_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pluggedCA is a root and an intermediate whose key the test holds: the
// server signs with it (--intermediate-key), and so can the test, as an
// attacker holding the CA's key would.
type pluggedCA struct {
	root, inter *x509.Certificate
	key         *ecdsa.PrivateKey
	files       []string // --root-cert, --intermediate-cert, --intermediate-key
}

func newPluggedCA(t *testing.T, dir string) *pluggedCA {
	t.Helper()
	rootKey := newECKey(t)
	td, _ := url.Parse("spiffe://cluster.local")
	now := time.Now()
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "witness test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, URIs: []*url.URL{td}}
	root := signCert(t, rootT, rootT, rootKey.Public(), rootKey)
	p := &pluggedCA{root: root, key: newECKey(t)}
	interT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "witness test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(47 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, URIs: []*url.URL{td}, SubjectKeyId: []byte{1, 2, 3, 4}}
	p.inter = signCert(t, interT, root, p.key.Public(), rootKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{{"root.pem", "CERTIFICATE", root.Raw}, {"inter.pem", "CERTIFICATE", p.inter.Raw}, {"inter.key", "PRIVATE KEY", keyDER}} {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		p.files = append(p.files, path)
	}
	return p
}

// flags are the server's plugged-in CA flags.
func (p *pluggedCA) flags() []string {
	return []string{"--root-cert", p.files[0], "--intermediate-cert", p.files[1], "--intermediate-key", p.files[2]}
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signCert(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mint signs a leaf for id with the intermediate key, bypassing the CA
// and its log.
func (p *pluggedCA) mint(t *testing.T, id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ttl),
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	return signCert(t, tmpl, p.inter, pub, p.key)
}

// fakeCA stands where the agent expects the CA, with a server certificate
// minted from the CA's key: it relays everything to the real CA except
// signing, which it does itself without logging, claiming log index 0.
type fakeCA struct {
	cav1.UnimplementedCertificateAuthorityServiceServer
	t          *testing.T
	ca         *pluggedCA
	anon, real cav1.CertificateAuthorityServiceClient
	addr       string
}

// startFakeCA listens on a free port and relays to the real CA at realAddr
// as node (an agent SVID minted from the CA's key).
func startFakeCA(t *testing.T, p *pluggedCA, realAddr, node string) *fakeCA {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{p.root})
	serverID := spiffeid.RequireFromPath(td, "/castellan/server")
	f := &fakeCA{t: t, ca: p}
	dial := func(creds credentials.TransportCredentials) cav1.CertificateAuthorityServiceClient {
		cc, err := grpc.NewClient(realAddr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cav1.NewCertificateAuthorityServiceClient(cc)
	}
	f.anon = dial(credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(serverID))))
	agentKey := newECKey(t)
	agentSVID := &x509svid.SVID{ID: spiffeid.RequireFromPath(td, "/castellan/agent/"+node),
		Certificates: []*x509.Certificate{p.mint(t, spiffeid.RequireFromPath(td, "/castellan/agent/"+node), agentKey.Public(), time.Hour), p.inter},
		PrivateKey:   agentKey}
	f.real = dial(credentials.NewTLS(tlsconfig.MTLSClientConfig(agentSVID, bundle, tlsconfig.AuthorizeID(serverID))))
	srvKey := newECKey(t)
	srvSVID := &x509svid.SVID{ID: serverID, Certificates: []*x509.Certificate{p.mint(t, serverID, srvKey.Public(), time.Hour), p.inter}, PrivateKey: srvKey}
	tlsConf := tlsconfig.TLSServerConfig(srvSVID)
	tlsConf.ClientAuth = tls.VerifyClientCertIfGiven
	tlsConf.ClientCAs = x509.NewCertPool()
	tlsConf.ClientCAs.AddCert(p.root)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)))
	cav1.RegisterCertificateAuthorityServiceServer(g, f)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return f
}

func (f *fakeCA) AttestAgent(ctx context.Context, req *cav1.AttestAgentRequest) (*cav1.AttestAgentResponse, error) {
	return f.anon.AttestAgent(ctx, req)
}

func (f *fakeCA) RenewAgent(ctx context.Context, req *cav1.RenewAgentRequest) (*cav1.RenewAgentResponse, error) {
	return f.real.RenewAgent(ctx, req)
}

func (f *fakeCA) GetBundle(ctx context.Context, req *cav1.GetBundleRequest) (*cav1.GetBundleResponse, error) {
	return f.real.GetBundle(ctx, req)
}

func (f *fakeCA) GetLogProof(ctx context.Context, req *cav1.GetLogProofRequest) (*cav1.GetLogProofResponse, error) {
	return f.real.GetLogProof(ctx, req)
}

func (f *fakeCA) SyncAgent(req *cav1.SyncAgentRequest, stream grpc.ServerStreamingServer[cav1.SyncAgentResponse]) error {
	up, err := f.real.SyncAgent(stream.Context(), req)
	if err != nil {
		return err
	}
	for {
		m, err := up.Recv()
		if err != nil {
			return err
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}

// BatchSignX509SVID signs every CSR with the CA's key and logs nothing,
// claiming the index of the last witnessed entry (a real issuance).
func (f *fakeCA) BatchSignX509SVID(ctx context.Context, req *cav1.BatchSignX509SVIDRequest) (*cav1.BatchSignX509SVIDResponse, error) {
	pr, err := f.real.GetLogProof(ctx, &cav1.GetLogProofRequest{})
	if err != nil {
		return nil, err
	}
	size, err := strconv.ParseUint(strings.Split(string(pr.GetCheckpoint()), "\n")[1], 10, 64)
	if err != nil {
		return nil, err
	}
	claim := size - 1
	resp := &cav1.BatchSignX509SVIDResponse{}
	for _, r := range req.GetRequests() {
		csr, err := x509.ParseCertificateRequest(r.GetCsr())
		if err != nil || len(csr.URIs) != 1 {
			resp.Results = append(resp.Results, &cav1.BatchResult{Result: &cav1.BatchResult_Error{Error: &cav1.Error{Code: 3, Message: "bad CSR"}}})
			continue
		}
		id, _ := spiffeid.FromURI(csr.URIs[0])
		leaf := f.ca.mint(f.t, id, csr.PublicKey, time.Hour)
		resp.Results = append(resp.Results, &cav1.BatchResult{Result: &cav1.BatchResult_Svid{Svid: &cav1.X509SVID{
			SpiffeId: id.String(), CertChain: [][]byte{leaf.Raw, f.ca.inter.Raw}, Serial: leaf.SerialNumber.Text(16),
			NotBefore: timestamppb.New(leaf.NotBefore), NotAfter: timestamppb.New(leaf.NotAfter), LogIndex: &claim,
		}}})
	}
	return resp, nil
}
