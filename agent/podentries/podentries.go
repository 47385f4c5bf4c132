// Package podentries gives a node agent on Kubernetes one identity per pod
// on its node, with no registration step: it wraps the agent's CA client so
// that the manager sees, besides the CA's registration entries, one entry
// per live pod on the node — SPIFFE ID spiffe://<td>/ns/<ns>/sa/<sa>,
// served only to callers attested with that pod's UID — and so that the
// SVIDs of those entries are requested by pod UID, which the CA checks
// against the API server (node restriction). A pod that goes away drops out
// of the entries, and the manager stops serving and deletes its SVID.
package podentries

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/manager"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/k8sid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// entryPrefix marks an entry ID that stands for a pod.
const entryPrefix = "k8s-pod:"

// Source lists the live pods on the node and signals changes;
// *attest.K8s implements it.
type Source interface {
	Pods() []attest.Pod
	Watch() (<-chan struct{}, func())
}

// CA wraps the manager's CA with pod entries. It is safe for concurrent use.
type CA struct {
	next manager.CA
	pods Source
	td   spiffeid.TrustDomain
}

// New returns next with the pods of src added as entries of trust domain td.
func New(next manager.CA, src Source, td spiffeid.TrustDomain) *CA {
	return &CA{next: next, pods: src, td: td}
}

// Entries returns one entry per pod of src, sorted by ID.
func Entries(td spiffeid.TrustDomain, pods []attest.Pod) []*cav1.Entry {
	out := make([]*cav1.Entry, 0, len(pods))
	for _, p := range pods {
		id, err := k8sid.ServiceAccount{Namespace: p.Namespace, Name: p.ServiceAccount}.ID(td)
		if err != nil {
			continue // not a valid path segment: the CA would refuse it anyway
		}
		out = append(out, &cav1.Entry{
			Id:        entryPrefix + p.UID,
			SpiffeId:  id.String(),
			Selectors: []*cav1.Selector{{Type: attest.SelectorK8s, Value: "pod-uid:" + p.UID}},
		})
	}
	slices.SortFunc(out, func(a, b *cav1.Entry) int { return strings.Compare(a.Id, b.Id) })
	return out
}

// BatchSign sends requests for pod entries by pod UID, the others as they are.
func (c *CA) BatchSign(ctx context.Context, reqs []*cav1.SignX509SVIDRequest) ([]*cav1.BatchResult, error) {
	out := make([]*cav1.SignX509SVIDRequest, len(reqs))
	for i, r := range reqs {
		uid, ok := strings.CutPrefix(r.GetEntryId(), entryPrefix)
		if !ok {
			out[i] = r
			continue
		}
		out[i] = &cav1.SignX509SVIDRequest{Csr: r.GetCsr(), TtlSeconds: r.GetTtlSeconds(), PodUid: uid}
	}
	return c.next.BatchSign(ctx, out)
}

// SyncAgent opens the CA's stream and returns one that sends the CA's
// state with the pod entries added, again whenever either changes.
func (c *CA) SyncAgent(ctx context.Context) (grpc.ServerStreamingClient[cav1.SyncAgentResponse], error) {
	inner, err := c.next.SyncAgent(ctx)
	if err != nil {
		return nil, err
	}
	changes, stop := c.pods.Watch()
	s := &stream{ServerStreamingClient: inner, ctx: ctx, ca: c, changes: changes, fromCA: make(chan *cav1.AgentState)}
	go func() {
		<-ctx.Done()
		stop()
	}()
	go s.read()
	return s, nil
}

// stream merges the CA's states with pod changes.
type stream struct {
	grpc.ServerStreamingClient[cav1.SyncAgentResponse]
	ctx     context.Context
	ca      *CA
	changes <-chan struct{}
	fromCA  chan *cav1.AgentState

	mu   sync.Mutex
	err  error // why the CA stream ended; valid once fromCA is closed
	last *cav1.AgentState
}

// read forwards the CA's states until its stream ends.
func (s *stream) read() {
	for {
		resp, err := s.ServerStreamingClient.Recv()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			close(s.fromCA)
			return
		}
		select {
		case s.fromCA <- resp.GetState():
		case <-s.ctx.Done():
			return
		}
	}
}

// Recv returns the next merged state. Pod changes before the CA's first
// state are held until it arrives.
func (s *stream) Recv() (*cav1.SyncAgentResponse, error) {
	for {
		select {
		case st, ok := <-s.fromCA:
			if !ok {
				s.mu.Lock()
				defer s.mu.Unlock()
				return nil, s.err
			}
			s.last = st
			return s.merged(), nil
		case <-s.changes:
			if s.last != nil {
				return s.merged(), nil
			}
		case <-s.ctx.Done():
			return nil, fmt.Errorf("podentries: %w", s.ctx.Err())
		}
	}
}

func (s *stream) merged() *cav1.SyncAgentResponse {
	st := &cav1.AgentState{
		Entries:        append(slices.Clone(s.last.GetEntries()), Entries(s.ca.td, s.ca.pods.Pods())...),
		Bundle:         s.last.GetBundle(),
		RevokedSerials: s.last.GetRevokedSerials(),
	}
	return &cav1.SyncAgentResponse{State: st}
}
