package sds

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/agent/state"
)

type deltaStream = grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]

// deltaState is what one incremental stream subscribed to and was sent.
// Resource versions are content hashes, so a client reconnecting with
// initial_resource_versions is not sent what it already holds.
type deltaState struct {
	sels       []state.Selector
	subscribed map[string]bool
	versions   map[string]string            // resource version the client holds (or is being sent)
	rejected   map[string]string            // resource version the client NACKed
	inflight   map[string]map[string]string // by nonce: name -> version held before the response
	nonce      string
	started    bool
}

// DeltaSecrets serves one incremental SDS stream.
func (s *Server) DeltaSecrets(stream deltaStream) error {
	ctx := stream.Context()
	sels, err := s.caller(ctx)
	if err != nil {
		return err
	}
	st := &deltaState{sels: sels, subscribed: map[string]bool{}, versions: map[string]string{},
		rejected: map[string]string{}, inflight: map[string]map[string]string{}}
	return serve(ctx, s.store, s.metrics, stream.Recv,
		func(req *discoveryv3.DeltaDiscoveryRequest) error { return s.onDeltaRequest(stream, st, req) },
		func() (bool, error) { return s.pushDelta(stream, st) })
}

func (s *Server) onDeltaRequest(stream deltaStream, st *deltaState, req *discoveryv3.DeltaDiscoveryRequest) error {
	if !st.started || req.GetTypeUrl() != "" {
		if err := checkType(req.GetTypeUrl()); err != nil {
			return err
		}
	}
	if !st.started {
		st.started = true
		for name, v := range req.GetInitialResourceVersions() {
			st.subscribed[name], st.versions[name] = true, v
		}
		s.log.Info("sds: delta subscription", "node", req.GetNode().GetId(), "names", req.GetResourceNamesSubscribe())
	}
	// Subscription changes apply whatever the nonce says.
	for _, name := range req.GetResourceNamesSubscribe() {
		st.subscribed[name] = true
	}
	for _, name := range req.GetResourceNamesUnsubscribe() {
		delete(st.subscribed, name)
		delete(st.versions, name)
		delete(st.rejected, name)
	}
	if prev, ok := st.inflight[req.GetResponseNonce()]; ok {
		delete(st.inflight, req.GetResponseNonce())
		if e := req.GetErrorDetail(); e != nil {
			// The client keeps what it held; remember what it refused so
			// that only a change is sent again.
			for name, v := range prev {
				st.rejected[name] = st.versions[name]
				st.versions[name] = v
			}
			inc(s.metrics.NACKs)
			s.log.Warn("sds: delta NACK", "node", req.GetNode().GetId(), "rejected_nonce", req.GetResponseNonce(), "error", e.GetMessage())
		}
	}
	if len(st.subscribed) == 0 && len(req.GetResourceNamesSubscribe()) == 0 && req.GetResponseNonce() == "" {
		return status.Errorf(codes.InvalidArgument, "sds: request names no secret; subscribe to %q, %q or a SPIFFE ID", DefaultName, RootCAName)
	}
	_, err := s.pushDelta(stream, st)
	return err
}

// pushDelta sends the subscribed resources whose version differs from the
// one the client holds, and removes those that no longer exist.
func (s *Server) pushDelta(stream deltaStream, st *deltaState) (bool, error) {
	snap := s.store.Current()
	ids := snap.For(st.sels)
	prev := map[string]string{}
	resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: strconv.FormatUint(snap.Revision, 10), TypeUrl: SecretTypeURL}
	for name := range st.subscribed {
		a, err := s.cache.resource(snap, ids, name)
		if err != nil {
			return false, status.Errorf(codes.Internal, "%v", err)
		}
		if a == nil {
			if _, held := st.versions[name]; held {
				resp.RemovedResources = append(resp.RemovedResources, name)
				delete(st.versions, name)
			}
			continue
		}
		sum := sha256.Sum256(a.Value)
		v := hex.EncodeToString(sum[:8])
		if st.versions[name] == v || st.rejected[name] == v {
			continue
		}
		prev[name] = st.versions[name]
		st.versions[name] = v
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: v, Resource: a})
	}
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 {
		return false, nil
	}
	resp.Nonce = s.nonce()
	if err := stream.Send(resp); err != nil {
		return false, err
	}
	st.nonce = resp.Nonce
	if len(st.inflight) >= maxInflight {
		clear(st.inflight)
	}
	st.inflight[resp.Nonce] = prev
	return true, nil
}
