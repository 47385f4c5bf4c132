package server

import (
	"context"
	"strings"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/server/issuance"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// publicService is a service served on the main port outside the admin
// gate.
type publicService struct {
	name     string
	register Registrar
}

// ServePublic adds a service that authenticates its callers itself (such
// as the Istio CA API) to every main gRPC server built after the call by
// GRPCServer, outside the admin gate. name is the full gRPC service name,
// e.g. "istio.v1.auth.IstioCertificateService". Its unary calls are
// certificate requests: the server's edge (package edge) counts their outcomes in
// castellan_csr_total, as for SignX509SVID.
func (s *Server) ServePublic(name string, r Registrar) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.public = append(s.public, publicService{name: name, register: r})
}

// publicServices returns the services added with ServePublic.
func (s *Server) publicServices() []publicService {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]publicService(nil), s.public...)
}

// isPublicService reports whether method ("/<service>/<method>") belongs to
// a service added with ServePublic.
func (s *Server) isPublicService(method string) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if !ok {
		return false
	}
	for _, p := range s.publicServices() {
		if p.name == svc {
			return true
		}
	}
	return false
}

// Authorizer returns the rule that decides which SVIDs a node may obtain,
// for front ends that authorize renewals the way agents' requests are.
func (s *Server) Authorizer() authz.Authorizer { return s.cfg.Authorizer }

// IssueRequest is one workload SVID requested through a front end that
// authenticates and authorizes its callers itself (the Istio CA API).
type IssueRequest struct {
	// CSR is the DER PKCS#10 request; it is validated exactly as for
	// SignX509SVID.
	CSR []byte
	// TTLSeconds is the requested lifetime: 0 for the default; above the
	// maximum it is refused (InvalidArgument), never shortened.
	TTLSeconds int64
	// Node is the caller's node for the ledger ("" if unknown); a banned
	// node is refused.
	Node string
	// Parent is the serial of the certificate the caller renews with
	// (recorded as the new certificate's parent; "" if none).
	Parent string
	// Detail is the ledger entry's reason, saying who asked and how.
	Detail string
	// Authorize decides whether the caller may obtain id, the SPIFFE ID of
	// the validated CSR, and returns the grant (whose TTL applies as for an
	// agent's request); it returns a refusal (authz.Deny, or another error
	// with a gRPC status) to refuse. Required.
	Authorize func(ctx context.Context, id spiffeid.ID) (authz.Grant, error)
}

// Issue validates, authorizes, signs and records one workload SVID on the
// same path as SignX509SVID: the same CSR and TTL rules, the signing
// histogram, and a ledger issuance entry that is durable before Issue
// returns. Its errors are refusals (*refusal.Error) or failures that the
// server's edge turns into a gRPC status and counts in castellan_csr_total
// when the front end's handler returns them: call it from the handler of a
// service added with ServePublic.
func (s *Server) Issue(ctx context.Context, req IssueRequest) (*authority.Issued, error) {
	if req.Authorize == nil {
		return nil, status.Error(codes.Internal, "server: Issue needs an Authorize function")
	}
	if err := s.cutoff.CheckNode(req.Node); err != nil {
		return nil, err
	}
	it := &issuance.Item{
		Req:       &cav1.SignX509SVIDRequest{Csr: req.CSR, TtlSeconds: req.TTLSeconds},
		Authorize: req.Authorize,
		Detail:    req.Detail,
		Parent:    req.Parent,
	}
	if err := s.issuer.Issue(ctx, req.Node, []*issuance.Item{it}); err != nil {
		return nil, err
	}
	if it.Err != nil {
		return nil, it.Err
	}
	return it.Issued, nil
}
