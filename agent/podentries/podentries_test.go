package podentries

import (
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/k8sattest"
	"github.com/castellan-dev/castellan/agent/manager"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

var _ manager.EntrySource = (*Source)(nil)

type fakePods struct {
	mu   sync.Mutex
	pods []k8sattest.Pod
	ch   chan struct{}
}

func (f *fakePods) Pods() []k8sattest.Pod            { f.mu.Lock(); defer f.mu.Unlock(); return f.pods }
func (f *fakePods) Watch() (<-chan struct{}, func()) { return f.ch, func() {} }
func (f *fakePods) set(p ...k8sattest.Pod) {
	f.mu.Lock()
	f.pods = p
	f.mu.Unlock()
	f.ch <- struct{}{}
}

func TestPodsBecomeEntriesAndFollowChanges(t *testing.T) {
	pods := &fakePods{ch: make(chan struct{}, 1), pods: []k8sattest.Pod{{UID: "u1", Namespace: "shop", Name: "cart", ServiceAccount: "cart"}}}
	src := New(pods, td)
	got := src.Entries()
	if len(got) != 1 {
		t.Fatalf("entries %v, want one for the pod", got)
	}
	e := got[0]
	if e.ID != "u1" || e.PodUID != "u1" || e.SPIFFEID.String() != "spiffe://cluster.local/ns/shop/sa/cart" ||
		len(e.Selectors) != 1 || e.Selectors[0] != (state.Selector{Type: k8sattest.SelectorType, Value: "pod-uid:u1"}) || e.TTL != 0 {
		t.Fatalf("pod entry %+v", e)
	}
	ch, stop := src.Watch()
	defer stop()
	pods.set() // the pod went away
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after the pods changed")
	}
	if got := src.Entries(); len(got) != 0 {
		t.Fatalf("entries after the pod left: %v", got)
	}
}

// A pod whose namespace or service account cannot be a SPIFFE ID path
// segment, or that has no UID, has no entry; the others are sorted by UID.
func TestEntriesSkipUnusablePodsAndSortByUID(t *testing.T) {
	got := Entries(td, []k8sattest.Pod{
		{UID: "u3", Namespace: "ns", ServiceAccount: "b"},
		{UID: "u2", Namespace: "bad/ns", ServiceAccount: "a"},
		{UID: "", Namespace: "ns", ServiceAccount: "a"},
		{UID: "u1", Namespace: "ns", ServiceAccount: "a"},
	})
	if len(got) != 2 || got[0].ID != "u1" || got[1].ID != "u3" {
		t.Fatalf("entries %+v, want u1 then u3", got)
	}
}
