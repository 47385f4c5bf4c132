package edge

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// SizeStats returns a gRPC stats handler that counts signing requests
// that gRPC refused before any handler ran because they exceeded the
// message size limit, so they show up in castellan_csr_total like every
// other refusal.
func (e *Edge) SizeStats() stats.Handler { return sizeStats{e: e} }

type sizeStats struct{ e *Edge }

type methodKey struct{}

// TagRPC implements stats.Handler.
func (h sizeStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, info.FullMethodName)
}

// HandleRPC implements stats.Handler.
func (h sizeStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || end.Error == nil || status.Code(end.Error) != codes.ResourceExhausted {
		return
	}
	method, _ := ctx.Value(methodKey{}).(string)
	if strings.HasPrefix(method, "/castellan.ca.v1.CertificateAuthorityService/") &&
		strings.Contains(status.Convert(end.Error).Message(), "larger than max") {
		h.e.count(ResultRefused, ReasonMessageTooLarge)
	}
}

// TagConn implements stats.Handler.
func (h sizeStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (h sizeStats) HandleConn(context.Context, stats.ConnStats) {}
