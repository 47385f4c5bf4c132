package server

// The edge: every call on the server's gRPC ports passes through these
// interceptors. They turn a handler's error into the status the caller
// receives (a *refusal.Error carries its own; anything else is logged and
// becomes Internal, or Unavailable for a store outage or an expired CA)
// and, for the calls that ask for a certificate, count the outcome in
// castellan_csr_total. Handlers return errors and count nothing.

import (
	"context"
	"errors"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// certificateMethods are the CA service's calls that ask for a
// certificate. They, and the calls of services added with ServePublic,
// are counted in castellan_csr_total.
var certificateMethods = map[string]bool{
	cav1.CertificateAuthorityService_AttestAgent_FullMethodName:       true,
	cav1.CertificateAuthorityService_RenewAgent_FullMethodName:        true,
	cav1.CertificateAuthorityService_SignX509SVID_FullMethodName:      true,
	cav1.CertificateAuthorityService_BatchSignX509SVID_FullMethodName: true,
}

// edgeUnary maps the handler's error to its status and counts the
// outcome of certificate requests: one per call, or one per item of a
// batch (countEach).
func (s *Server) edgeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !s.isCertificateMethod(info.FullMethod) {
		resp, err := h(ctx, req)
		return resp, s.statusOf(ctx, info.FullMethod, err)
	}
	t := &tally{}
	resp, err := h(context.WithValue(ctx, tallyKey{}, t), req)
	if !t.each || err != nil {
		s.countResult(err)
	}
	return resp, s.statusOf(ctx, info.FullMethod, err)
}

// edgeStream maps a stream handler's error to its status.
func (s *Server) edgeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return s.statusOf(ss.Context(), info.FullMethod, h(srv, ss))
}

// isCertificateMethod reports whether method asks for a certificate.
func (s *Server) isCertificateMethod(method string) bool {
	return certificateMethods[method] || s.isPublicService(method)
}

// tally marks a call whose outcomes the handler counted item by item.
type tally struct{ each bool }

type tallyKey struct{}

// countEach counts the outcome of every item of a batch call in place of
// the call's own.
func (s *Server) countEach(ctx context.Context, items []*issuance) {
	if t, ok := ctx.Value(tallyKey{}).(*tally); ok {
		t.each = true
	}
	for _, it := range items {
		s.countResult(it.err)
	}
}

// countResult counts one request outcome.
func (s *Server) countResult(err error) {
	if err == nil {
		s.metrics.count(resultIssued, reasonOK)
		return
	}
	result, reason := classify(err)
	s.metrics.count(result, reason)
}

// classify maps an error to its castellan_csr_total labels: a refusal
// counts under its reason; a failure of the CA is an error, by cause.
func classify(err error) (result, reason string) {
	if e, ok := refusal.As(err); ok && e.Reason != "" {
		return resultRefused, e.Reason
	}
	if errors.Is(err, store.ErrUnavailable) {
		return resultError, reasonStoreUnavailable
	}
	return resultError, reasonInternal
}

// statusOf converts err, returned by method, to a gRPC status error;
// errors without a status of their own become Internal with a generic
// message (logged in full).
func (s *Server) statusOf(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, store.ErrUnavailable) {
		s.log.WarnContext(ctx, "request failed: the registry store is unavailable", "method", method, "error", err.Error())
		return storeStatus(err, "join tokens and registration entries")
	}
	s.log.ErrorContext(ctx, "request failed", "method", method, "error", err.Error())
	switch {
	case errors.Is(err, leaf.ErrSignerExpired):
		return status.Error(codes.Unavailable, err.Error())
	case s.isCertificateMethod(method):
		return status.Error(codes.Internal, "server: internal error while signing; see the CA's logs")
	}
	return status.Error(codes.Internal, "server: internal error; see the CA's logs")
}

// refuse returns a refusal by the server itself (size limits, bans,
// renewal limits): a *refusal.Error whose message is prefixed "server: ".
func refuse(code codes.Code, reason, format string, args ...any) *refusal.Error {
	return refusal.Errorf(code, reason, "server: "+format, args...)
}
