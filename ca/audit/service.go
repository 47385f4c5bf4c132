// Package audit serves castellan.audit.v1.AuditService over the issuance
// ledger: certificate search, inclusion and consistency proofs, signed
// checkpoints, revocation, a live event stream and a raw export for
// verification. Every call passes the Service's Authorizer first.
package audit

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/lineage"
	"github.com/castellan-dev/castellan/ca/verifier"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DefaultPageSize is the List page size when the request sets none.
const DefaultPageSize = 100

// exportChunk is how many leaves one Export message carries.
const exportChunk = 256

// Service implements auditv1.AuditServiceServer.
type Service struct {
	auditv1.UnimplementedAuditServiceServer
	l     *ledger.Ledger
	authz Authorizer
	log   *slog.Logger
}

// Config holds the settings of a Service; its zero value is the default.
type Config struct {
	// Authorizer decides who may call the service (nil: nobody).
	Authorizer Authorizer
	// Logger receives revocations and refused calls (nil: discard).
	Logger *slog.Logger
}

// NewService returns the audit service over l.
func NewService(l *ledger.Ledger, cfg Config) *Service {
	if cfg.Authorizer == nil {
		cfg.Authorizer = denyAll
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{l: l, authz: cfg.Authorizer, log: cfg.Logger}
}

// Register adds the service to a gRPC server; its signature fits
// server.Registrar.
func (s *Service) Register(g grpc.ServiceRegistrar) { auditv1.RegisterAuditServiceServer(g, s) }

func (s *Service) allow(ctx context.Context, method string) error {
	if err := s.authz(ctx); err != nil {
		s.log.WarnContext(ctx, "audit call refused", "method", method, "caller", callerName(ctx), "error", err.Error())
		return err
	}
	return nil
}

// List returns one page of events.
func (s *Service) List(ctx context.Context, req *auditv1.ListRequest) (*auditv1.ListResponse, error) {
	if err := s.allow(ctx, "List"); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	if size < 0 || size > index.MaxPageSize {
		return nil, status.Errorf(codes.InvalidArgument, "audit: page_size must be between 1 and %d (0 means %d); page through larger results", index.MaxPageSize, DefaultPageSize)
	}
	entries, next, err := s.l.List(ctx, filterOf(req), size, req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &auditv1.ListResponse{NextPageToken: next, Events: make([]*auditv1.Event, len(entries))}
	for i := range entries {
		resp.Events[i] = EventProto(&entries[i])
	}
	return resp, nil
}

// Get returns a certificate and its inclusion proof against the latest
// signed checkpoint.
func (s *Service) Get(ctx context.Context, req *auditv1.GetRequest) (*auditv1.GetResponse, error) {
	if err := s.allow(ctx, "Get"); err != nil {
		return nil, err
	}
	if req.GetSerial() == "" {
		return nil, status.Error(codes.InvalidArgument, "audit: serial is required")
	}
	e, err := s.l.Get(ctx, req.GetSerial())
	if err != nil {
		return nil, toStatus(err)
	}
	signed, size, err := s.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	hashes, err := s.l.InclusionProof(e.Index, size)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &auditv1.GetResponse{
		Event: EventProto(&e),
		Proof: &auditv1.InclusionProof{LeafIndex: e.Index, TreeSize: size, Hashes: hashes, Checkpoint: signed},
	}
	if req.GetLineage() {
		if err := s.lineage(ctx, e.Serial, resp); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// lineage adds serial's ancestors and descendants (without their
// certificates) to resp.
func (s *Service) lineage(ctx context.Context, serial string, resp *auditv1.GetResponse) error {
	anc, t1, err := s.l.Ancestors(ctx, serial, lineage.MaxWalk)
	if err != nil {
		return toStatus(err)
	}
	desc, t2, err := s.l.Descendants(ctx, serial, lineage.MaxWalk)
	if err != nil {
		return toStatus(err)
	}
	for _, list := range []struct {
		in  []entry.Entry
		out *[]*auditv1.Event
	}{{anc, &resp.Ancestors}, {desc, &resp.Descendants}} {
		for i := range list.in {
			pb := EventProto(&list.in[i])
			pb.CertDer, pb.Data = nil, nil
			*list.out = append(*list.out, pb)
		}
	}
	resp.LineageTruncated = t1 || t2
	return nil
}

// checkpoint returns the latest signed checkpoint and its size.
func (s *Service) checkpoint(ctx context.Context) ([]byte, uint64, error) {
	signed, err := s.l.Checkpoint(ctx)
	if err != nil {
		return nil, 0, toStatus(err)
	}
	cp, err := verifier.OpenCheckpoint(signed, s.l.Origin(), s.l.VerifierKey())
	if err != nil {
		return nil, 0, toStatus(err)
	}
	return signed, cp.Size, nil
}

// Revoke revokes a certificate.
func (s *Service) Revoke(ctx context.Context, req *auditv1.RevokeRequest) (*auditv1.RevokeResponse, error) {
	if err := s.allow(ctx, "Revoke"); err != nil {
		return nil, err
	}
	if req.GetSerial() == "" {
		return nil, status.Error(codes.InvalidArgument, "audit: serial is required")
	}
	if req.GetWithDescendants() {
		return s.revokeLineage(ctx, req)
	}
	e, err := s.l.Revoke(ctx, req.GetSerial(), req.GetReason())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.InfoContext(ctx, "certificate revoked", "serial", e.Serial, "spiffe_id", e.SPIFFEID,
		"reason", e.Reason, "by", callerName(ctx), "index", e.Index)
	return &auditv1.RevokeResponse{Revocation: EventProto(&e), Revocations: []*auditv1.Event{EventProto(&e)}}, nil
}

// revokeLineage revokes a certificate and its descendants in one append.
func (s *Service) revokeLineage(ctx context.Context, req *auditv1.RevokeRequest) (*auditv1.RevokeResponse, error) {
	revs, err := s.l.RevokeWithDescendants(ctx, req.GetSerial(), req.GetReason())
	if err != nil && len(revs) == 0 {
		return nil, toStatus(err)
	}
	resp := &auditv1.RevokeResponse{}
	for i := range revs {
		e := &revs[i]
		s.log.InfoContext(ctx, "certificate revoked", "serial", e.Serial, "spiffe_id", e.SPIFFEID,
			"reason", e.Reason, "by", callerName(ctx), "index", e.Index, "lineage_of", req.GetSerial())
		resp.Revocations = append(resp.Revocations, EventProto(e))
	}
	resp.Revocation = resp.Revocations[0]
	if err != nil {
		return resp, toStatus(err)
	}
	return resp, nil
}

// Checkpoint returns the latest signed checkpoint.
func (s *Service) Checkpoint(ctx context.Context, _ *auditv1.CheckpointRequest) (*auditv1.CheckpointResponse, error) {
	if err := s.allow(ctx, "Checkpoint"); err != nil {
		return nil, err
	}
	signed, err := s.l.Checkpoint(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &auditv1.CheckpointResponse{Checkpoint: signed, Origin: s.l.Origin(), VerifierKey: s.l.VerifierKey()}, nil
}

// Consistency returns a consistency proof.
func (s *Service) Consistency(ctx context.Context, req *auditv1.ConsistencyRequest) (*auditv1.ConsistencyResponse, error) {
	if err := s.allow(ctx, "Consistency"); err != nil {
		return nil, err
	}
	resp := &auditv1.ConsistencyResponse{FromSize: req.GetFromSize(), ToSize: req.GetToSize()}
	if resp.ToSize == 0 {
		signed, size, err := s.checkpoint(ctx)
		if err != nil {
			return nil, err
		}
		resp.ToSize, resp.Checkpoint = size, signed
	}
	hashes, err := s.l.ConsistencyProof(resp.FromSize, resp.ToSize)
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Hashes = hashes
	return resp, nil
}

// WatchFromHeader is the response header in which Watch tells the client
// the index of the first event it will send. Once the client has the
// header, every event from that index on reaches it, including events
// appended while the header was in flight.
const WatchFromHeader = "castellan-watch-from"

// Watch streams events as they are appended. It sends WatchFromHeader
// before the first event.
func (s *Service) Watch(req *auditv1.WatchRequest, stream grpc.ServerStreamingServer[auditv1.WatchResponse]) error {
	ctx := stream.Context()
	if err := s.allow(ctx, "Watch"); err != nil {
		return err
	}
	from := s.l.Size()
	if req.FromIndex != nil {
		from = req.GetFromIndex()
	}
	if err := stream.SendHeader(metadata.Pairs(WatchFromHeader, strconv.FormatUint(from, 10))); err != nil {
		return err
	}
	err := s.l.Watch(ctx, from, func(e entry.Entry) error {
		return stream.Send(&auditv1.WatchResponse{Event: EventProto(&e)})
	})
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return toStatus(err)
}

// Export streams the stored leaves.
func (s *Service) Export(req *auditv1.ExportRequest, stream grpc.ServerStreamingServer[auditv1.ExportResponse]) error {
	ctx := stream.Context()
	if err := s.allow(ctx, "Export"); err != nil {
		return err
	}
	msg := &auditv1.ExportResponse{}
	flush := func() error {
		if len(msg.Leaves) == 0 {
			return nil
		}
		err := stream.Send(msg)
		msg = &auditv1.ExportResponse{}
		return err
	}
	err := s.l.Export(ctx, req.GetFromIndex(), func(lf verifier.Leaf) error {
		msg.Leaves = append(msg.Leaves, &auditv1.Leaf{Index: lf.Index, Data: lf.Data, LeafHash: lf.Hash})
		if len(msg.Leaves) == exportChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return toStatus(fmt.Errorf("export: %w", err))
	}
	return nil
}
