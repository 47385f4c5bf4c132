package sds

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/castellan-dev/castellan/agent/state"
)

type sotwStream = grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]

// sotwState is what one state-of-the-world stream subscribed to and what
// the client holds. A response is applied or rejected as a whole, so
// contents are tracked per response nonce until the ACK or NACK arrives.
type sotwState struct {
	sels  []state.Selector
	names []string
	nonce string // nonce of the last response

	acked    map[string][]byte            // content the client has ACKed, by name
	sent     map[string][]byte            // content the client holds once in-flight responses apply
	inflight map[string]map[string][]byte // content sent, by nonce, not yet ACKed or NACKed
	rejected map[string][]byte            // content of the last NACKed response
}

// maxInflight bounds the responses remembered while awaiting their ACKs.
const maxInflight = 16

// StreamSecrets serves one state-of-the-world SDS stream.
func (s *Server) StreamSecrets(stream sotwStream) error {
	ctx := stream.Context()
	sels, err := s.caller(ctx)
	if err != nil {
		return err
	}
	st := &sotwState{sels: sels, acked: map[string][]byte{}, sent: map[string][]byte{}, inflight: map[string]map[string][]byte{}}
	return serve(ctx, s.store, s.metrics, stream.Recv,
		func(req *discoveryv3.DiscoveryRequest) error { return s.onRequest(stream, st, req) },
		func() (bool, error) { return s.push(stream, st) })
}

func (s *Server) onRequest(stream sotwStream, st *sotwState, req *discoveryv3.DiscoveryRequest) error {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return err
	}
	nonce := req.GetResponseNonce()
	if sent, ok := st.inflight[nonce]; ok {
		delete(st.inflight, nonce)
		if e := req.GetErrorDetail(); e != nil {
			st.rejected = sent
			for name, content := range sent { // the client kept what it had
				if bytes.Equal(st.sent[name], content) {
					st.sent[name] = st.acked[name]
				}
			}
			inc(s.metrics.NACKs)
			s.log.Warn("sds: NACK", "node", req.GetNode().GetId(), "names", req.GetResourceNames(),
				"rejected_nonce", nonce, "kept_version", req.GetVersionInfo(), "error", e.GetMessage())
		} else {
			maps.Copy(st.acked, sent)
		}
	}
	if nonce != "" && nonce != st.nonce {
		s.log.Debug("sds: stale nonce, subscription unchanged", "nonce", nonce, "current", st.nonce)
		return nil
	}
	if len(req.GetResourceNames()) == 0 {
		return status.Errorf(codes.InvalidArgument, "sds: request names no secret; ask for %q, %q or a SPIFFE ID", DefaultName, RootCAName)
	}
	if nonce != "" && slices.Equal(req.GetResourceNames(), st.names) {
		return nil // an ACK or NACK of the latest response: nothing to answer
	}
	if nonce == "" {
		s.log.Info("sds: subscription", "node", req.GetNode().GetId(), "cluster", req.GetNode().GetCluster(),
			"names", req.GetResourceNames(), "version", req.GetVersionInfo())
	}
	st.names = slices.Clone(req.GetResourceNames())
	for name := range st.sent { // a name dropped and asked again is sent again
		if !slices.Contains(st.names, name) {
			delete(st.acked, name)
			delete(st.sent, name)
		}
	}
	_, err := s.push(stream, st)
	return err
}

// push sends the subscribed resources whose content differs from what the
// client holds once the responses on their way apply, unless that is exactly
// the content the client last rejected; it reports whether it sent.
func (s *Server) push(stream sotwStream, st *sotwState) (bool, error) {
	if len(st.names) == 0 {
		return false, nil // not subscribed yet
	}
	snap := s.store.Current()
	ids := snap.For(st.sels)
	var (
		out      []*anypb.Any
		contents = map[string][]byte{}
		allSeen  = true // every resource to send was in the rejected response
	)
	for _, name := range st.names {
		a, err := s.cache.resource(snap, ids, name)
		if err != nil {
			return false, status.Errorf(codes.Internal, "%v", err)
		}
		if a == nil {
			s.log.Debug("sds: requested secret does not exist", "name", name, "revision", snap.Revision)
			continue
		}
		if bytes.Equal(st.sent[name], a.Value) {
			continue
		}
		allSeen = allSeen && bytes.Equal(st.rejected[name], a.Value)
		out, contents[name] = append(out, a), a.Value
	}
	if len(out) == 0 || allSeen {
		return false, nil
	}
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: strconv.FormatUint(snap.Revision, 10),
		Resources:   out,
		TypeUrl:     SecretTypeURL,
		Nonce:       s.nonce(),
	}
	if err := stream.Send(resp); err != nil {
		return false, err
	}
	st.nonce = resp.Nonce
	if len(st.inflight) >= maxInflight {
		clear(st.inflight) // a client that never ACKs; forget, at worst resend
	}
	st.inflight[resp.Nonce] = contents
	maps.Copy(st.sent, contents)
	return true, nil
}

// FetchSecrets answers one request with the requested secrets that exist;
// NotFound if none does.
func (s *Server) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	sels, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	snap := s.store.Current()
	ids := snap.For(sels)
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: strconv.FormatUint(snap.Revision, 10), TypeUrl: SecretTypeURL, Nonce: s.nonce()}
	for _, name := range req.GetResourceNames() {
		a, err := s.cache.resource(snap, ids, name)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		if a != nil {
			resp.Resources = append(resp.Resources, a)
		}
	}
	if len(resp.Resources) == 0 {
		return nil, status.Errorf(codes.NotFound, "sds: none of the secrets %q exists for this workload", req.GetResourceNames())
	}
	return resp, nil
}
