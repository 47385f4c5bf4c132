// Package workloadapi serves the SPIFFE Workload API (go-spiffe's proto) from
// the agent's state: FetchX509SVID and FetchX509Bundles stream the caller's
// SVIDs and the trust bundle, and push again on every change.
//
// Every call must carry the `workload.spiffe.io: true` metadata header (the
// SPIFFE security header that keeps browsers and proxies from reaching the
// API); a call without it fails with InvalidArgument. A caller whose attested
// selectors match no identity gets PermissionDenied, and is counted. JWT
// SVIDs and WIT SVIDs are not served yet.
package workloadapi

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/state"
)

// HeaderKey and HeaderValue form the SPIFFE Workload API security header.
const (
	HeaderKey   = "workload.spiffe.io"
	HeaderValue = "true"
)

// Metrics are the collectors the server updates; nil fields are not updated.
type Metrics struct {
	Streams     prometheus.Gauge    // open FetchX509SVID/FetchX509Bundles streams
	Unmatched   prometheus.Counter  // callers refused for matching no identity
	PushLatency prometheus.Observer // seconds from a state change to the push
}

// Config configures a Server. Store is required.
type Config struct {
	Store   *state.Store
	Logger  *slog.Logger
	Metrics Metrics
}

// Server implements workload.SpiffeWorkloadAPIServer. Callers must be
// attested with attest.Credentials.
type Server struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	store   *state.Store
	log     *slog.Logger
	metrics Metrics
}

// New returns a server reading cfg.Store.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("workloadapi: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{store: cfg.Store, log: cfg.Logger, metrics: cfg.Metrics}, nil
}

// FetchX509SVID streams the caller's X.509-SVIDs, with the bundle, and
// pushes a new response whenever they change.
func (s *Server) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	return serve(s, stream, x509SVIDResponse)
}

// FetchX509Bundles streams the trust bundles the caller should trust and
// pushes a new response whenever they change.
func (s *Server) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream grpc.ServerStreamingServer[workloadpb.X509BundlesResponse]) error {
	return serve(s, stream, x509BundlesResponse)
}

// FetchJWTSVID is not implemented yet.
func (s *Server) FetchJWTSVID(ctx context.Context, _ *workloadpb.JWTSVIDRequest) (*workloadpb.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	return nil, status.Error(codes.Unimplemented, "workloadapi: JWT-SVIDs are not issued by this agent yet; use X.509-SVIDs (FetchX509SVID)")
}

// ValidateJWTSVID is not implemented yet.
func (s *Server) ValidateJWTSVID(ctx context.Context, _ *workloadpb.ValidateJWTSVIDRequest) (*workloadpb.ValidateJWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	return nil, status.Error(codes.Unimplemented, "workloadapi: JWT-SVID validation is not supported by this agent yet; use X.509-SVIDs")
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(HeaderKey); len(v) != 1 || v[0] != HeaderValue {
		return status.Errorf(codes.InvalidArgument, "workloadapi: security header missing from request: send metadata %q: %q", HeaderKey, HeaderValue)
	}
	return nil
}

// build renders a response for a caller's identities; nil means nothing to
// send yet (no bundle).
type build[T any] func(snap *state.Snapshot, ids []state.Identity) (*T, bool, error)

// serve runs one streaming call: it checks the header and the caller, sends
// the first response, and then a new one on every change of its content.
func serve[T any](s *Server, stream grpc.ServerStreamingServer[T], render build[T]) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	sels, err := attest.FromContext(ctx)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "workloadapi: workload attestation failed: %v", err)
	}
	if s.metrics.Streams != nil {
		s.metrics.Streams.Inc()
		defer s.metrics.Streams.Dec()
	}
	watch, stop := s.store.Watch()
	defer stop()
	var last *T
	woke := time.Time{}
	for {
		snap := s.store.Current()
		ids := snap.For(sels)
		if len(ids) == 0 {
			if s.metrics.Unmatched != nil {
				s.metrics.Unmatched.Inc()
			}
			s.log.Warn("workloadapi: caller matches no identity", "selectors", fmt.Sprint(sels))
			return status.Errorf(codes.PermissionDenied,
				"workloadapi: no identity issued: no registration entry matches this workload (attested selectors %v)%s", sels, attest.Explain(ctx))
		}
		resp, ok, err := render(snap, ids)
		if err != nil {
			return status.Errorf(codes.Internal, "%v", err)
		}
		if ok && (last == nil || !proto.Equal(any(resp).(proto.Message), any(last).(proto.Message))) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last = resp
			if !woke.IsZero() && s.metrics.PushLatency != nil {
				s.metrics.PushLatency.Observe(time.Since(woke).Seconds())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
			woke = time.Now()
		}
		// The stream lives as long as its connection, which may have been
		// handed to another process since the caller was attested: that
		// process must not receive the next rotated key.
		if _, err := attest.FromContext(ctx); err != nil {
			return status.Errorf(codes.PermissionDenied, "workloadapi: workload attestation failed: %v", err)
		}
	}
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func x509SVIDResponse(snap *state.Snapshot, ids []state.Identity) (*workloadpb.X509SVIDResponse, bool, error) {
	if snap.Bundle == nil || snap.Bundle.Empty() {
		return nil, false, nil
	}
	bundle := concatDER(snap.Bundle.X509Authorities())
	resp := &workloadpb.X509SVIDResponse{}
	for _, id := range ids {
		chain, key, err := id.SVID.MarshalRaw()
		if err != nil {
			return nil, false, fmt.Errorf("workloadapi: encode %s: %w", id.SVID.ID, err)
		}
		resp.Svids = append(resp.Svids, &workloadpb.X509SVID{
			SpiffeId: id.SVID.ID.String(), X509Svid: chain, X509SvidKey: key, Bundle: bundle,
		})
	}
	return resp, true, nil
}

func x509BundlesResponse(snap *state.Snapshot, _ []state.Identity) (*workloadpb.X509BundlesResponse, bool, error) {
	if snap.Bundle == nil || snap.Bundle.Empty() {
		return nil, false, nil
	}
	return &workloadpb.X509BundlesResponse{Bundles: map[string][]byte{
		snap.Bundle.TrustDomain().IDString(): concatDER(snap.Bundle.X509Authorities()),
	}}, true, nil
}
