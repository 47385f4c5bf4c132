// Package istio serves Istio's CA API,
// istio.v1.auth.IstioCertificateService/CreateCertificate, so that an
// istio-agent or ztunnel whose CA_ADDR points at Castellan gets its
// workload certificates from it.
//
// The wire behaviour follows istiod's CA server: the request carries a PEM
// CSR, a validity in seconds and metadata (ImpersonatedIdentity); the
// response's cert_chain is the leaf PEM, then the intermediates, then the
// trust bundle's roots as the last element. Callers authenticate with a
// Kubernetes service-account token ("authorization: Bearer <jwt>", audience
// istio-ca, checked with TokenReview) whose service account is the identity
// spiffe://<td>/ns/<ns>/sa/<sa>, or with a client certificate holding an
// X.509-SVID of the trust domain (renewing that same identity). The CSR's
// URI SAN must be the caller's identity. Every certificate goes through
// ca/server's issuance path: the authority's CSR and TTL rules, metrics,
// and the ledger before the caller sees it.
//
// A renewal with a client certificate is authorized the way the CA
// authorizes an agent's request (renewal.go): the certificate must be in
// the ledger, neither it nor any of its ancestors revoked, and its
// identity still assigned to the node the ledger says it was issued to —
// by a registration entry (whose TTL bounds the new certificate's) or, on
// Kubernetes, by a live pod of that service account on that node. The new
// certificate records the caller's serial as its parent and the same node.
package istio

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/ca/server/cutoff"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/k8sid"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"
	corev1 "k8s.io/api/core/v1"
)

// Protocol constants shared with Istio.
const (
	// Audience is the audience of the Kubernetes tokens Istio's CA clients
	// send.
	Audience = "istio-ca"
	// ServiceName is the gRPC service this package implements.
	ServiceName = "istio.v1.auth.IstioCertificateService"
	// ImpersonatedIdentity is the request metadata key with which a
	// trusted node proxy (ztunnel) asks for another workload's identity.
	ImpersonatedIdentity = "ImpersonatedIdentity"
)

// Reasons for refusals of this API (castellan_csr_total labels), next to
// those of authn, authz and authority.
const (
	ReasonNoCredentials       = "istio_no_credentials"
	ReasonJWTDisabled         = "istio_jwt_disabled"
	ReasonCertNotWorkload     = "istio_cert_not_workload"
	ReasonCertRevoked         = "istio_cert_revoked"
	ReasonIdentityMismatch    = "istio_identity_mismatch"
	ReasonImpersonationDenied = "istio_impersonation_denied"
	ReasonCertNotLogged       = "istio_cert_not_logged"
	ReasonLineageRevoked      = "istio_lineage_revoked"
	ReasonLineageTooLong      = "istio_lineage_too_long"
	ReasonNotAssigned         = "istio_not_assigned"
)

// TokenReviewer authenticates a Kubernetes token (*authn.TokenReviewer).
type TokenReviewer interface {
	Review(ctx context.Context, token string) (authn.TokenIdentity, error)
}

// NodePods lists the pods the API server has on a node (*authz.Pods).
type NodePods interface {
	OnNode(node string) []*corev1.Pod
}

// Config configures a Service. Server and Authority are required.
type Config struct {
	// Server signs and records certificates (Server.Issue).
	Server *server.Server
	// Authority gives the trust domain and the roots for the response.
	Authority *authority.Authority
	// Tokens authenticates bearer tokens (nil: only client certificates
	// are accepted).
	Tokens TokenReviewer
	// Ledger tells where a client certificate was issued and what it
	// descends from. Required.
	Ledger Ledger
	// Authorizer decides whether a client certificate's identity is still
	// assigned to its node (nil: Server.Authorizer()).
	Authorizer authz.Authorizer
	// TrustedNodeAccounts are the service accounts ("namespace/name")
	// whose pod-bound tokens may ask for another workload's identity with
	// ImpersonatedIdentity, for a service account that has a pod on the
	// caller's node (Istio's CA_TRUSTED_NODE_ACCOUNTS). Empty: refused.
	TrustedNodeAccounts []string
	// Pods is required with TrustedNodeAccounts; when set, a client
	// certificate's identity is also assigned while a live pod of its
	// service account runs on its node.
	Pods NodePods
	// Logger receives refusals (nil: discard).
	Logger *slog.Logger
	// Clock decides which revocations are still in force (nil: the wall
	// clock).
	Clock clock.Clock
}

// Service implements IstioCertificateService.
type Service struct {
	pb.UnimplementedIstioCertificateServiceServer
	cfg     Config
	td      spiffeid.TrustDomain
	trusted map[string]bool // "namespace/name"
	log     *slog.Logger
	clock   clock.Clock
}

// New checks cfg and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Server == nil || cfg.Authority == nil || cfg.Ledger == nil {
		return nil, errors.New("istio: Server, Authority and Ledger are required")
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = cfg.Server.Authorizer()
	}
	s := &Service{cfg: cfg, td: cfg.Authority.TrustDomain(), trusted: map[string]bool{},
		log: cfg.Logger, clock: clock.OrSystem(cfg.Clock)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, a := range cfg.TrustedNodeAccounts {
		ns, name, err := authn.ParseServiceAccount(a)
		if err != nil {
			return nil, fmt.Errorf("istio: trusted node account: %w", err)
		}
		s.trusted[ns+"/"+name] = true
	}
	if len(s.trusted) > 0 && (cfg.Pods == nil || cfg.Tokens == nil) {
		return nil, errors.New("istio: trusted node accounts need Kubernetes token authentication and a pod lister")
	}
	return s, nil
}

// Register adds the service to g (a server.Registrar, for
// Server.ServePublic).
func (s *Service) Register(g grpc.ServiceRegistrar) {
	pb.RegisterIstioCertificateServiceServer(g, s)
}

// caller is an authenticated caller.
type caller struct {
	id   spiffeid.ID
	k8s  *authn.TokenIdentity // nil for a client certificate
	cert *entry.Entry         // the client certificate's ledger entry; nil for a token
	how  string               // for logs and the ledger
}

// CreateCertificate implements IstioCertificateService.
func (s *Service) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	want, detail := c.id, "istio CreateCertificate by "+c.how
	if imp := req.GetMetadata().GetFields()[ImpersonatedIdentity].GetStringValue(); imp != "" {
		if want, err = s.impersonate(c, imp); err != nil {
			return nil, s.refuse(ctx, err)
		}
		detail += " for " + want.String()
	}
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, s.refuse(ctx, refusal.Errorf(codes.InvalidArgument, leaf.ReasonMalformedCSR,
			"authority: csr is not a PEM CERTIFICATE REQUEST"))
	}
	ttl := max(req.GetValidityDuration(), 0) // Istio treats a non-positive validity as "the default"
	node, parent := "", ""
	switch {
	case c.k8s != nil:
		node = c.k8s.Node
	case c.cert != nil:
		node, parent = c.cert.Node, c.cert.Serial
	}
	iss, err := s.cfg.Server.Issue(ctx, server.IssueRequest{
		CSR: block.Bytes, TTLSeconds: ttl, Node: node, Parent: parent, Detail: detail,
		Authorize: func(ctx context.Context, id spiffeid.ID) (authz.Grant, error) {
			if id != want {
				return authz.Grant{}, authz.Deny(ReasonIdentityMismatch, "the CSR names %s but the caller (%s) may only obtain %s", id, c.how, want)
			}
			if c.cert == nil {
				return authz.Grant{}, nil
			}
			return s.authorizeRenewal(ctx, c)
		},
	})
	if err != nil {
		s.log.WarnContext(ctx, "istio certificate refused", "caller", c.how, "spiffe_id", want.String(), "error", err.Error())
		return nil, err
	}
	return &pb.IstioCertificateResponse{CertChain: s.chainPEM(iss)}, nil
}

// chainPEM is the response chain: one PEM element per certificate of the
// issued chain (leaf first), then the roots of the trust bundle in one
// last element, the issuing root first (Istio's "the root cert is the last
// element"; during a CA rotation it holds every root a peer may use: those
// of the prepared, active, old and tainted authorities). The bundle is
// read after signing, so it holds the issuing root: a root leaves it only
// when its authority is revoked, which is refused while it signs.
func (s *Service) chainPEM(iss *authority.Issued) []string {
	out := make([]string, 0, len(iss.Chain)+1)
	for _, c := range iss.Chain {
		out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	roots := s.cfg.Authority.Snapshot().Roots
	if i := slices.IndexFunc(roots, func(r *x509.Certificate) bool { return issuedBy(iss.Chain[len(iss.Chain)-1], r) }); i > 0 {
		roots[0], roots[i] = roots[i], roots[0]
	}
	var buf []byte
	for _, r := range roots {
		buf = append(buf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return append(out, string(buf))
}

// issuedBy reports whether c was signed by root: same issuer name and key
// identifier, else (no key identifiers) a valid signature.
func issuedBy(c, root *x509.Certificate) bool {
	if !bytes.Equal(c.RawIssuer, root.RawSubject) {
		return false
	}
	if len(c.AuthorityKeyId) > 0 && len(root.SubjectKeyId) > 0 {
		return bytes.Equal(c.AuthorityKeyId, root.SubjectKeyId)
	}
	return c.CheckSignatureFrom(root) == nil
}

// refuse logs a refusal before issuance and returns it; the server's edge
// counts it and sends its status.
func (s *Service) refuse(ctx context.Context, err error) error {
	s.log.WarnContext(ctx, "istio certificate request refused", "reason", refusal.ReasonOf(err), "error", err.Error())
	return err
}

// authenticate tries the client certificate, then the bearer token, as
// istiod does.
func (s *Service) authenticate(ctx context.Context) (caller, error) {
	leaf := cutoff.PeerCertificate(ctx)
	token, hasToken := bearerToken(ctx)
	var certErr error
	if leaf != nil {
		c, err := s.certCaller(ctx, leaf)
		if err == nil {
			return c, nil
		}
		certErr = err
	}
	if !hasToken {
		if certErr != nil {
			return caller{}, certErr
		}
		return caller{}, authn.Fail(ReasonNoCredentials, "no credentials: send \"authorization: Bearer <Kubernetes service-account token with audience %s>\" or a client X.509-SVID of trust domain %q", Audience, s.td)
	}
	if s.cfg.Tokens == nil {
		return caller{}, authn.Fail(ReasonJWTDisabled, "this CA does not accept Kubernetes tokens (it runs without a Kubernetes client); present a client X.509-SVID")
	}
	ti, err := s.cfg.Tokens.Review(ctx, token)
	if err != nil {
		return caller{}, err
	}
	id, err := k8sid.ServiceAccount{Namespace: ti.Namespace, Name: ti.ServiceAccount}.ID(s.td)
	if err != nil {
		return caller{}, authn.Fail(authn.ReasonK8sNotSA, "service account %s/%s makes no valid SPIFFE ID: %w", ti.Namespace, ti.ServiceAccount, err)
	}
	how := "Kubernetes token of " + ti.Namespace + "/" + ti.ServiceAccount
	if ti.PodName != "" {
		how += " (pod " + ti.PodName + ")"
	}
	return caller{id: id, k8s: &ti, how: how}, nil
}

// certCaller authenticates a verified client certificate: an unrevoked
// X.509-SVID of the trust domain that is not one of Castellan's own (agent
// and server identities renew through the Castellan API), found in the
// ledger, whose lineage no revocation cut off (renewal.go).
func (s *Service) certCaller(ctx context.Context, leaf *x509.Certificate) (caller, error) {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return caller{}, authn.Fail(ReasonCertNotWorkload, "client certificate is not an X.509-SVID: %w", err)
	}
	if !id.MemberOf(s.td) || strings.HasPrefix(id.Path(), "/castellan/") {
		return caller{}, authn.Fail(ReasonCertNotWorkload, "client certificate identity %s is not a workload identity of trust domain %q", id, s.td)
	}
	sn := serial.FromBig(leaf.SerialNumber).String()
	how := "client certificate " + id.String() + " serial " + sn
	cert, err := s.checkLineage(ctx, id, sn)
	if err != nil {
		return caller{}, err
	}
	return caller{id: id, cert: &cert, how: how}, nil
}

// impersonate checks that c may obtain the identity imp for a workload on
// its node and returns it: c must be a trusted node account whose token is
// bound to a pod that the API server has, alive, on the token's node, and
// a live pod on that node must run as imp's service account.
func (s *Service) impersonate(c caller, imp string) (spiffeid.ID, error) {
	deny := func(format string, args ...any) (spiffeid.ID, error) {
		return spiffeid.ID{}, authz.Deny(ReasonImpersonationDenied, "impersonation of %q refused: "+format, append([]any{imp}, args...)...)
	}
	if len(s.trusted) == 0 {
		return deny("this CA trusts no node accounts (--istio-trusted-node-sa)")
	}
	if c.k8s == nil || !s.trusted[c.k8s.Namespace+"/"+c.k8s.ServiceAccount] {
		return deny("the caller (%s) is not a trusted node account", c.how)
	}
	id, err := spiffeid.FromString(imp)
	if err != nil {
		return deny("not a SPIFFE ID: %v", err)
	}
	want, err := k8sid.FromID(id)
	if err != nil || !id.MemberOf(s.td) {
		return deny("want spiffe://%s/ns/<namespace>/sa/<service-account>", s.td)
	}
	ti := c.k8s
	if ti.Node == "" || ti.PodUID == "" {
		return deny("the caller's token is not bound to a pod on a node")
	}
	pods := s.cfg.Pods.OnNode(ti.Node)
	callerAcct := k8sid.ServiceAccount{Namespace: ti.Namespace, Name: ti.ServiceAccount}
	callerLive := slices.ContainsFunc(pods, func(p *corev1.Pod) bool {
		return k8sid.CheckPod(p, k8sid.Claim{Node: ti.Node, UID: ti.PodUID, Account: callerAcct}) == nil
	})
	if !callerLive {
		return deny("the caller's pod %s/%s (uid %s) is not running on node %q", ti.Namespace, ti.PodName, ti.PodUID, ti.Node)
	}
	if !slices.ContainsFunc(pods, func(p *corev1.Pod) bool {
		return k8sid.RunsAs(p, ti.Node, want)
	}) {
		return deny("no pod of service account %s runs on node %q", want, ti.Node)
	}
	return id, nil
}

// bearerToken returns the token of the first "authorization: Bearer"
// metadata value.
func bearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok && tok != "" {
			return tok, true
		}
	}
	return "", false
}
