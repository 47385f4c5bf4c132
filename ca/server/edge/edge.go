// Package edge is where every call on the CA server's gRPC ports ends:
// its interceptors turn a handler's error into the status the caller
// receives (a *refusal.Error carries its own; anything else is logged and
// becomes Internal, or Unavailable for a store outage or an expired CA)
// and, for the calls that ask for a certificate, count the outcome in
// castellan_csr_total. Handlers return errors and count nothing.
package edge

import (
	"context"
	"errors"
	"log/slog"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CSR results (label "result" of castellan_csr_total).
const (
	ResultIssued  = "issued"  // signed and recorded
	ResultRefused = "refused" // bad request, unauthenticated or unauthorized
	ResultError   = "error"   // the CA failed
)

// Reasons the edge counts besides those of the refusals themselves.
const (
	ReasonOK              = "ok"
	ReasonMessageTooLarge = "message_too_large"
	ReasonInternal        = "internal"
	// ReasonStoreUnavailable: the registry store could not be reached.
	ReasonStoreUnavailable = "store_unavailable"
)

// certificateMethods are the CA service's calls that ask for a
// certificate. They, and the calls of the server's public services, are
// counted in castellan_csr_total.
var certificateMethods = map[string]bool{
	cav1.CertificateAuthorityService_AttestAgent_FullMethodName:       true,
	cav1.CertificateAuthorityService_RenewAgent_FullMethodName:        true,
	cav1.CertificateAuthorityService_SignX509SVID_FullMethodName:      true,
	cav1.CertificateAuthorityService_BatchSignX509SVID_FullMethodName: true,
}

// Edge maps errors to statuses and counts certificate requests.
type Edge struct {
	log *slog.Logger
	// isPublic reports whether a method belongs to a service added with
	// server.Server.ServePublic (its unary calls ask for certificates).
	isPublic func(method string) bool
	csrs     *prometheus.CounterVec
}

// New returns the edge of a server that logs to log; isPublic reports
// whether a method belongs to a service added with ServePublic. Register
// its Collectors to export castellan_csr_total.
func New(log *slog.Logger, isPublic func(method string) bool) *Edge {
	return &Edge{log: log, isPublic: isPublic, csrs: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "castellan_csr_total",
		Help: "Certificate signing requests by result (issued, refused, error) and reason.",
	}, []string{"result", "reason"})}
}

// Collectors returns the edge's metric, castellan_csr_total.
func (e *Edge) Collectors() []prometheus.Collector { return []prometheus.Collector{e.csrs} }

// Unary maps the handler's error to its status and counts the outcome of
// certificate requests: one per call, or one per item of a batch
// (CountByItem).
func (e *Edge) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !e.isCertificateMethod(info.FullMethod) {
		resp, err := h(ctx, req)
		return resp, e.Status(ctx, info.FullMethod, err)
	}
	t := &tally{}
	resp, err := h(context.WithValue(ctx, tallyKey{}, t), req)
	if !t.each || err != nil {
		e.Count(err)
	}
	return resp, e.Status(ctx, info.FullMethod, err)
}

// Stream maps a stream handler's error to its status.
func (e *Edge) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return e.Status(ss.Context(), info.FullMethod, h(srv, ss))
}

// isCertificateMethod reports whether method asks for a certificate.
func (e *Edge) isCertificateMethod(method string) bool {
	return certificateMethods[method] || e.isPublic(method)
}

// tally marks a call whose outcomes the handler counted item by item.
type tally struct{ each bool }

type tallyKey struct{}

// CountByItem tells the edge that the handler of the call of ctx counts
// the outcome of every item of its batch with Count, in place of the
// call's own.
func (e *Edge) CountByItem(ctx context.Context) {
	if t, ok := ctx.Value(tallyKey{}).(*tally); ok {
		t.each = true
	}
}

// Count counts one request outcome.
func (e *Edge) Count(err error) {
	if err == nil {
		e.count(ResultIssued, ReasonOK)
		return
	}
	result, reason := classify(err)
	e.count(result, reason)
}

func (e *Edge) count(result, reason string) {
	e.csrs.WithLabelValues(result, reason).Inc()
}

// classify maps an error to its castellan_csr_total labels: a refusal
// counts under its reason; a failure of the CA is an error, by cause.
func classify(err error) (result, reason string) {
	if e, ok := refusal.As(err); ok && e.Reason != "" {
		return ResultRefused, e.Reason
	}
	if errors.Is(err, store.ErrUnavailable) {
		return ResultError, ReasonStoreUnavailable
	}
	return ResultError, ReasonInternal
}

// Status converts err, returned by method, to a gRPC status error;
// errors without a status of their own become Internal with a generic
// message (logged in full).
func (e *Edge) Status(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, store.ErrUnavailable) {
		e.log.WarnContext(ctx, "request failed: the registry store is unavailable", "method", method, "error", err.Error())
		return StoreStatus(err, "join tokens and registration entries")
	}
	e.log.ErrorContext(ctx, "request failed", "method", method, "error", err.Error())
	switch {
	case errors.Is(err, leaf.ErrSignerExpired):
		return status.Error(codes.Unavailable, err.Error())
	case e.isCertificateMethod(method):
		return status.Error(codes.Internal, "server: internal error while signing; see the CA's logs")
	}
	return status.Error(codes.Internal, "server: internal error; see the CA's logs")
}

// StoreStatus is what a caller is told when a store failed: Unavailable,
// without the store's own message (which may name internal hosts; it is
// logged). what names the data, e.g. "join tokens".
func StoreStatus(err error, what string) error {
	if errors.Is(err, store.ErrCommitUnknown) {
		return status.Errorf(codes.Unavailable, "server: the CA lost its datastore while saving %s; the change may or may not have been made, check and retry", what)
	}
	return status.Errorf(codes.Unavailable, "server: the CA's datastore (%s) is unavailable; nothing was changed, retry later or through another CA replica", what)
}
