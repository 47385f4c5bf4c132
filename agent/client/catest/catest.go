// Package catest is an in-process certificate authority for the agent's
// tests and benchmarks: a real gRPC server on 127.0.0.1 speaking
// castellan.ca.v1 over TLS, signing with crypto/x509 under a generated root
// and intermediate. It enforces what the real CA promises the agent (join
// tokens are one-time, every call but AttestAgent needs the agent SVID,
// signing is limited to the node's entries) and lets tests stop it, make it
// fail, and count batches.
package catest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CA is the fake certificate authority. Its exported fields may be set
// before Start.
type CA struct {
	cav1.UnimplementedCertificateAuthorityServiceServer

	// TrustDomain of every identity the CA signs.
	TrustDomain spiffeid.TrustDomain
	// DefaultTTL for workload SVIDs whose entry names none.
	DefaultTTL time.Duration
	// AgentTTL for agent SVIDs.
	AgentTTL time.Duration
	// Backdate moves workload NotBefore this far into the past, as real
	// CAs do to allow for clock skew.
	Backdate time.Duration
	// Now is the CA's clock for workload SVIDs (agent and server SVIDs use
	// the wall clock, because TLS checks them against it).
	Now func() time.Time

	root, inter       *x509.Certificate
	rootKey, interKey crypto.Signer
	serverCert        tls.Certificate

	mu       sync.Mutex
	primary  *Replica          // the server Start, Stop and Addr work on
	tokens   map[string]string // token -> node
	entries  map[string]*cav1.Entry
	revoked  map[string]bool
	failSign error
	batches  int
	signed   int
	changed  chan struct{}
	// workload, when set by RotateIntermediate, signs workload SVIDs in
	// place of inter; tainted are pushed to agents as tainted authorities.
	workload    *x509.Certificate
	workloadKey crypto.Signer
	tainted     [][]byte
}

// New returns a CA for td with a fresh root and intermediate.
func New(t testing.TB, td spiffeid.TrustDomain) *CA {
	t.Helper()
	ca := &CA{
		TrustDomain: td, DefaultTTL: time.Hour, AgentTTL: time.Hour, Now: time.Now,
		tokens: map[string]string{}, entries: map[string]*cav1.Entry{}, revoked: map[string]bool{},
		changed: make(chan struct{}),
	}
	now := time.Now()
	ca.rootKey = newKey(t)
	ca.root = mustCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "catest root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{td.ID().URL()},
	}, nil, ca.rootKey.Public(), ca.rootKey)
	ca.interKey = newKey(t)
	ca.inter = mustCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "catest intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(47 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{td.ID().URL()},
	}, ca.root, ca.interKey.Public(), ca.rootKey)
	serverKey := newKey(t)
	serverID := spiffeid.RequireFromPath(td, "/castellan/server")
	leaf := ca.sign(t, serverID, serverKey.Public(), now, 47*time.Hour-time.Minute)
	ca.serverCert = tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.inter.Raw}, PrivateKey: serverKey, Leaf: leaf}
	return ca
}

// Bundle returns the CA's trust bundle (the root).
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.root})
}

// WriteBundle writes the root as PEM to path, as castellan-server writes
// bundle.pem.
func (ca *CA) WriteBundle(t testing.TB, path string) {
	t.Helper()
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Issue signs an SVID for id with a fresh P-256 key, valid from now for
// ttl, chained leaf + intermediate.
func (ca *CA) Issue(t testing.TB, id spiffeid.ID, now time.Time, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	leaf := ca.sign(t, id, key.Public(), now, ttl)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, ca.inter}, PrivateKey: key}
}

// RotateIntermediate makes a new intermediate under the same root sign
// workload SVIDs from now on, and returns the one that signed them before
// (agent and server SVIDs keep the first intermediate).
func (ca *CA) RotateIntermediate(t testing.TB) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	inter := mustCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "catest intermediate 2"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(47 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{ca.TrustDomain.ID().URL()},
	}, ca.root, key.Public(), ca.rootKey)
	ca.mu.Lock()
	defer ca.mu.Unlock()
	old := ca.workload
	if old == nil {
		old = ca.inter
	}
	ca.workload, ca.workloadKey = inter, key
	return old
}

// Taint pushes certs to every SyncAgent stream as tainted authorities.
func (ca *CA) Taint(certs ...*x509.Certificate) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.tainted = nil
	for _, c := range certs {
		ca.tainted = append(ca.tainted, c.Raw)
	}
	ca.notifyLocked()
}

// Start serves the CA on 127.0.0.1 (on a fresh port the first time, on the
// same port after Stop) until Stop or the end of the test.
func (ca *CA) Start(t testing.TB) {
	t.Helper()
	ca.mu.Lock()
	if ca.primary == nil {
		ca.primary = &Replica{ca: ca, cert: ca.serverCert}
	}
	r := ca.primary
	ca.mu.Unlock()
	r.Start(t)
}

// Stop closes the listener and every connection at once.
func (ca *CA) Stop() {
	ca.mu.Lock()
	r := ca.primary
	ca.mu.Unlock()
	if r != nil {
		r.Stop()
	}
}

// Addr returns the address the CA listens on.
func (ca *CA) Addr() string {
	ca.mu.Lock()
	r := ca.primary
	ca.mu.Unlock()
	if r == nil {
		return ""
	}
	return r.Addr()
}

// JoinToken creates a one-time token for node.
func (ca *CA) JoinToken(node string) string {
	tok := hex.EncodeToString(big.NewInt(time.Now().UnixNano()).Bytes()) + node
	ca.mu.Lock()
	ca.tokens[tok] = node
	ca.mu.Unlock()
	return tok
}

// SetEntry adds or replaces a registration entry and notifies syncing
// agents.
func (ca *CA) SetEntry(e *cav1.Entry) {
	ca.mu.Lock()
	ca.entries[e.Id] = e
	ca.notifyLocked()
	ca.mu.Unlock()
}

// DeleteEntry removes an entry and notifies syncing agents.
func (ca *CA) DeleteEntry(id string) {
	ca.mu.Lock()
	delete(ca.entries, id)
	ca.notifyLocked()
	ca.mu.Unlock()
}

// Revoke adds a serial to the revoked list, exactly as given (the real CA
// pushes serial.Number's canonical form; tests may push other forms), and
// notifies syncing agents.
func (ca *CA) Revoke(s string) {
	ca.mu.Lock()
	ca.revoked[s] = true
	ca.notifyLocked()
	ca.mu.Unlock()
}

// FailSigning makes every signing call fail with err (nil restores it).
func (ca *CA) FailSigning(err error) {
	ca.mu.Lock()
	ca.failSign = err
	ca.mu.Unlock()
}

// Counts returns how many batch calls and how many SVIDs the CA signed.
func (ca *CA) Counts() (batches, signed int) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.batches, ca.signed
}

func (ca *CA) notifyLocked() {
	close(ca.changed)
	ca.changed = make(chan struct{})
}

// AttestAgent implements castellan.ca.v1.
func (ca *CA) AttestAgent(ctx context.Context, req *cav1.AttestAgentRequest) (*cav1.AttestAgentResponse, error) {
	ca.mu.Lock()
	node, ok := ca.tokens[req.GetJoinToken()]
	delete(ca.tokens, req.GetJoinToken())
	ca.mu.Unlock()
	if !ok {
		return nil, status.Error(codes.PermissionDenied, "join token is unknown, expired or already used")
	}
	svid, err := ca.signCSR(req.Csr, spiffeid.RequireFromPath(ca.TrustDomain, "/castellan/agent/"+node), time.Now(), ca.AgentTTL)
	if err != nil {
		return nil, err
	}
	return &cav1.AttestAgentResponse{Svid: svid, Bundle: ca.bundleProto()}, nil
}

// RenewAgent implements castellan.ca.v1.
func (ca *CA) RenewAgent(ctx context.Context, req *cav1.RenewAgentRequest) (*cav1.RenewAgentResponse, error) {
	node, err := ca.caller(ctx)
	if err != nil {
		return nil, err
	}
	svid, err := ca.signCSR(req.Csr, spiffeid.RequireFromPath(ca.TrustDomain, "/castellan/agent/"+node), time.Now(), ca.AgentTTL)
	if err != nil {
		return nil, err
	}
	return &cav1.RenewAgentResponse{Svid: svid}, nil
}

// BatchSignX509SVID implements castellan.ca.v1.
func (ca *CA) BatchSignX509SVID(ctx context.Context, req *cav1.BatchSignX509SVIDRequest) (*cav1.BatchSignX509SVIDResponse, error) {
	node, err := ca.caller(ctx)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	fail := ca.failSign
	ca.batches++
	ca.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	resp := &cav1.BatchSignX509SVIDResponse{}
	for _, r := range req.Requests {
		svid, err := ca.signFor(node, r)
		if err != nil {
			st, _ := status.FromError(err)
			resp.Results = append(resp.Results, &cav1.BatchResult{Result: &cav1.BatchResult_Error{Error: &cav1.Error{Code: int32(st.Code()), Message: st.Message()}}})
			continue
		}
		resp.Results = append(resp.Results, &cav1.BatchResult{Result: &cav1.BatchResult_Svid{Svid: svid}})
	}
	return resp, nil
}

// SignX509SVID implements castellan.ca.v1.
func (ca *CA) SignX509SVID(ctx context.Context, req *cav1.SignX509SVIDRequest) (*cav1.SignX509SVIDResponse, error) {
	node, err := ca.caller(ctx)
	if err != nil {
		return nil, err
	}
	svid, err := ca.signFor(node, req)
	if err != nil {
		return nil, err
	}
	return &cav1.SignX509SVIDResponse{Svid: svid}, nil
}

// GetBundle implements castellan.ca.v1.
func (ca *CA) GetBundle(ctx context.Context, _ *cav1.GetBundleRequest) (*cav1.GetBundleResponse, error) {
	if _, err := ca.caller(ctx); err != nil {
		return nil, err
	}
	return &cav1.GetBundleResponse{Bundle: ca.bundleProto()}, nil
}

// SyncAgent implements castellan.ca.v1.
func (ca *CA) SyncAgent(_ *cav1.SyncAgentRequest, stream grpc.ServerStreamingServer[cav1.SyncAgentResponse]) error {
	node, err := ca.caller(stream.Context())
	if err != nil {
		return err
	}
	for {
		ca.mu.Lock()
		st := &cav1.AgentState{Bundle: ca.bundleProto()}
		for _, e := range ca.entries {
			if e.Node == node {
				st.Entries = append(st.Entries, e)
			}
		}
		for s := range ca.revoked {
			st.RevokedSerials = append(st.RevokedSerials, s)
		}
		st.TaintedAuthorities = ca.tainted
		changed := ca.changed
		ca.mu.Unlock()
		if err := stream.Send(&cav1.SyncAgentResponse{State: st}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-changed:
		}
	}
}

func (ca *CA) signFor(node string, r *cav1.SignX509SVIDRequest) (*cav1.X509SVID, error) {
	ca.mu.Lock()
	e, ok := ca.entries[r.EntryId]
	ca.mu.Unlock()
	if !ok || e.Node != node {
		return nil, status.Errorf(codes.PermissionDenied, "entry %q is not assigned to node %q", r.EntryId, node)
	}
	ttl := ca.DefaultTTL
	if r.TtlSeconds > 0 {
		ttl = time.Duration(r.TtlSeconds) * time.Second
	}
	now := ca.Now()
	ca.mu.Lock()
	issuer, key := ca.workload, ca.workloadKey
	ca.mu.Unlock()
	if issuer == nil {
		issuer, key = ca.inter, ca.interKey
	}
	svid, err := ca.signCSRBy(issuer, key, r.Csr, spiffeid.RequireFromString(e.SpiffeId), now.Add(-ca.Backdate), ttl+ca.Backdate)
	if err == nil {
		ca.mu.Lock()
		ca.signed++
		ca.mu.Unlock()
	}
	return svid, err
}

// caller returns the node of the agent SVID the peer presented.
func (ca *CA) caller(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return "", status.Error(codes.Unauthenticated, "this call needs the agent SVID over mTLS")
	}
	id, err := x509svid.IDFromCert(ti.State.VerifiedChains[0][0])
	if err != nil {
		return "", status.Error(codes.Unauthenticated, err.Error())
	}
	var node string
	if _, err := fmt.Sscanf(id.Path(), "/castellan/agent/%s", &node); err != nil {
		return "", status.Errorf(codes.PermissionDenied, "%s is not an agent", id)
	}
	return node, nil
}

func (ca *CA) signCSR(der []byte, id spiffeid.ID, now time.Time, ttl time.Duration) (*cav1.X509SVID, error) {
	return ca.signCSRBy(ca.inter, ca.interKey, der, id, now, ttl)
}

func (ca *CA) signCSRBy(issuer *x509.Certificate, key crypto.Signer, der []byte, id spiffeid.ID, now time.Time, ttl time.Duration) (*cav1.X509SVID, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR signature: %v", err)
	}
	leaf, err := signLeafBy(issuer, key, id, csr.PublicKey, now, ttl)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &cav1.X509SVID{
		SpiffeId:  id.String(),
		CertChain: [][]byte{leaf.Raw, issuer.Raw},
		Serial:    serial.FromBig(leaf.SerialNumber).String(),
		NotBefore: timestamppb.New(leaf.NotBefore),
		NotAfter:  timestamppb.New(leaf.NotAfter),
	}, nil
}

func (ca *CA) bundleProto() *cav1.Bundle {
	return &cav1.Bundle{TrustDomain: ca.TrustDomain.Name(), X509Authorities: [][]byte{ca.root.Raw}, Sequence: 1}
}

func (ca *CA) sign(t testing.TB, id spiffeid.ID, pub crypto.PublicKey, now time.Time, ttl time.Duration) *x509.Certificate {
	t.Helper()
	c, err := ca.signLeaf(id, pub, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *CA) signLeaf(id spiffeid.ID, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	return signLeafBy(ca.inter, ca.interKey, id, pub, now, ttl)
}

func signLeafBy(issuer *x509.Certificate, key crypto.Signer, id spiffeid.ID, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		NotBefore:    now, NotAfter: now.Add(ttl),
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func newKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
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
