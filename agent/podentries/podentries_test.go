package podentries

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/attest"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

type fakeSource struct {
	mu   sync.Mutex
	pods []attest.Pod
	ch   chan struct{}
}

func (f *fakeSource) Pods() []attest.Pod               { f.mu.Lock(); defer f.mu.Unlock(); return f.pods }
func (f *fakeSource) Watch() (<-chan struct{}, func()) { return f.ch, func() {} }
func (f *fakeSource) set(p ...attest.Pod) {
	f.mu.Lock()
	f.pods = p
	f.mu.Unlock()
	f.ch <- struct{}{}
}

type fakeStream struct {
	grpc.ServerStreamingClient[cav1.SyncAgentResponse]
	states chan *cav1.AgentState
}

func (s *fakeStream) Recv() (*cav1.SyncAgentResponse, error) {
	st, ok := <-s.states
	if !ok {
		return nil, io.EOF
	}
	return &cav1.SyncAgentResponse{State: st}, nil
}

type fakeCA struct {
	stream *fakeStream
	got    []*cav1.SignX509SVIDRequest
}

func (f *fakeCA) BatchSign(_ context.Context, reqs []*cav1.SignX509SVIDRequest) ([]*cav1.BatchResult, error) {
	f.got = reqs
	return make([]*cav1.BatchResult, len(reqs)), nil
}

func (f *fakeCA) SyncAgent(context.Context) (grpc.ServerStreamingClient[cav1.SyncAgentResponse], error) {
	return f.stream, nil
}

func recv(t *testing.T, s grpc.ServerStreamingClient[cav1.SyncAgentResponse]) *cav1.AgentState {
	t.Helper()
	type r struct {
		resp *cav1.SyncAgentResponse
		err  error
	}
	ch := make(chan r, 1)
	go func() { resp, err := s.Recv(); ch <- r{resp, err} }()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatal(got.err)
		}
		return got.resp.GetState()
	case <-time.After(5 * time.Second):
		t.Fatal("no state")
		return nil
	}
}

func TestPodsBecomeEntriesAndFollowChanges(t *testing.T) {
	src := &fakeSource{ch: make(chan struct{}, 1), pods: []attest.Pod{{UID: "u1", Namespace: "shop", Name: "cart", ServiceAccount: "cart"}}}
	inner := &fakeCA{stream: &fakeStream{states: make(chan *cav1.AgentState, 1)}}
	ca := New(inner, src, td)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := ca.SyncAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inner.stream.states <- &cav1.AgentState{Entries: []*cav1.Entry{{Id: "e1", SpiffeId: "spiffe://cluster.local/x"}}, RevokedSerials: []string{"ab"}}
	st := recv(t, s)
	if len(st.Entries) != 2 || st.Entries[0].Id != "e1" || st.Entries[1].Id != "k8s-pod:u1" ||
		st.Entries[1].SpiffeId != "spiffe://cluster.local/ns/shop/sa/cart" || st.Entries[1].Selectors[0].Value != "pod-uid:u1" {
		t.Fatalf("merged entries %v", st.Entries)
	}
	if len(st.RevokedSerials) != 1 {
		t.Fatal("revoked serials lost")
	}
	src.set() // the pod went away
	if st := recv(t, s); len(st.Entries) != 1 || st.Entries[0].Id != "e1" {
		t.Fatalf("entries after the pod left: %v", st.Entries)
	}
}

func TestPodEntriesAreSignedByPodUID(t *testing.T) {
	inner := &fakeCA{}
	ca := New(inner, &fakeSource{}, td)
	_, err := ca.BatchSign(context.Background(), []*cav1.SignX509SVIDRequest{
		{Csr: []byte{1}, EntryId: "k8s-pod:u1", TtlSeconds: 60},
		{Csr: []byte{2}, EntryId: "e1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := inner.got[0]; r.PodUid != "u1" || r.EntryId != "" || r.TtlSeconds != 60 || r.Csr[0] != 1 {
		t.Fatalf("pod request sent as %v", r)
	}
	if r := inner.got[1]; r.EntryId != "e1" || r.PodUid != "" {
		t.Fatalf("entry request sent as %v", r)
	}
}
