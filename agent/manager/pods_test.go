package manager

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// domainCA is a CA at the manager's seam: states pushed by the test,
// SVIDs signed by the real authority. It records what it was asked.
type domainCA struct {
	ca     *catest.CA
	states chan upstream.State

	mu    sync.Mutex
	asked []upstream.Entry
}

func (d *domainCA) Sync(ctx context.Context, update func(upstream.State)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case st := <-d.states:
			update(st)
		}
	}
}

func (d *domainCA) Sign(_ context.Context, entries []upstream.Entry) ([]upstream.Signed, error) {
	d.mu.Lock()
	d.asked = append(d.asked, entries...)
	d.mu.Unlock()
	out := make([]upstream.Signed, len(entries))
	for i, e := range entries {
		out[i].SVID, out[i].Err = d.ca.Sign(e.SPIFFEID, e.TTL)
	}
	return out, nil
}

// askedFor returns the request made for entry ID id, if any.
func (d *domainCA) askedFor(id string) (upstream.Entry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.asked {
		if e.ID == id {
			return e, true
		}
	}
	return upstream.Entry{}, false
}

// fakePods is the entry source of a node's pods.
type fakePods struct {
	mu      sync.Mutex
	entries []upstream.Entry
	ch      chan struct{}
}

func (f *fakePods) Entries() []upstream.Entry        { f.mu.Lock(); defer f.mu.Unlock(); return f.entries }
func (f *fakePods) Watch() (<-chan struct{}, func()) { return f.ch, func() {} }
func (f *fakePods) set(e ...upstream.Entry) {
	f.mu.Lock()
	f.entries = e
	f.mu.Unlock()
	f.ch <- struct{}{}
}

func podEntry(uid, sa string) upstream.Entry {
	return upstream.Entry{ID: uid, PodUID: uid, SPIFFEID: spiffeid.RequireFromPath(td, "/ns/shop/sa/"+sa),
		Selectors: []state.Selector{{Type: "k8s", Value: "pod-uid:" + uid}}}
}

// startDomain runs a manager on d and pods.
func startDomain(t *testing.T, d *domainCA, pods *fakePods) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: clocktest.NewClock(time.Now().Truncate(time.Second))}
	var err error
	e.cache, err = cache.Open(filepath.Join(e.dir, "cache.db"), cache.Config{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.store, e.reg = state.NewStore(), prometheus.NewRegistry()
	e.mgr, err = New(Config{CA: d, Pods: pods, Cache: e.cache, Store: e.store, TrustDomain: td, Clock: e.clock,
		Policy: rotate.Policy{Rand: func() float64 { return 0 }}, Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.mgr.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = e.cache.Close() })
	return e
}

// The node's pods are a second entry source merged by the manager with
// the CA's entries: each pod's SVID is asked for by pod UID, a pod whose
// ID a CA entry already uses is ignored, later CA states keep the pods,
// and a pod that goes away stops being served and leaves the cache.
func TestPodEntriesAreMergedWithTheCAs(t *testing.T) {
	ca := catest.New(t, td)
	d := &domainCA{ca: ca, states: make(chan upstream.State, 1)}
	caEntry := upstream.Entry{ID: "e1", SPIFFEID: spiffeid.RequireFromPath(td, "/ns/default/sa/ratings"),
		Selectors: []state.Selector{{Type: "unix", Value: "uid:1000"}}}
	clash := podEntry("e1", "clash") // a pod whose UID is the CA entry's ID
	pods := &fakePods{ch: make(chan struct{}, 1), entries: []upstream.Entry{podEntry("u1", "cart"), clash}}
	e := startDomain(t, d, pods)
	d.states <- upstream.State{Entries: []upstream.Entry{caEntry}, Bundle: ca.Bundle()}
	snap := e.waitSnapshot("CA entry and pod", func(s *state.Snapshot) bool { return find(s, "e1") != nil && find(s, "u1") != nil })
	if got := find(snap, "e1").ID; got != caEntry.SPIFFEID {
		t.Fatalf("entry e1 serves %s: the pod with the same ID replaced the CA's entry", got)
	}
	if got := find(snap, "u1").ID.String(); got != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("pod served as %s", got)
	}
	if r, _ := d.askedFor("u1"); r.PodUID != "u1" {
		t.Fatalf("pod SVID asked for as %+v, want by pod UID", r)
	}
	if r, _ := d.askedFor("e1"); r.PodUID != "" {
		t.Fatalf("CA entry asked for as %+v, want by entry ID", r)
	}

	// A new CA state keeps the pod; the pod's departure drops it.
	d.states <- upstream.State{Entries: []upstream.Entry{caEntry}, Bundle: ca.Bundle()}
	pods.set()
	e.waitSnapshot("pod dropped", func(s *state.Snapshot) bool { return find(s, "u1") == nil && find(s, "e1") != nil })
	if _, ok, _ := e.cache.Get("u1"); ok {
		t.Fatal("the SVID of a pod that went away is still cached")
	}
}

// Before the CA's first state the agent cannot tell which cached
// identities still have an entry: pod entries wait for it, and then
// arrive with it.
func TestPodEntriesWaitForTheCAsFirstState(t *testing.T) {
	ca := catest.New(t, td)
	d := &domainCA{ca: ca, states: make(chan upstream.State, 1)}
	pods := &fakePods{ch: make(chan struct{}, 1), entries: []upstream.Entry{podEntry("u1", "cart")}}
	e := startDomain(t, d, pods)
	pods.set(podEntry("u1", "cart"), podEntry("u2", "shop")) // a change before any CA state
	// The loop arms its idle timer once at start and again after it has
	// taken the change.
	idle := e.clock.Now().Add(time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if !e.clock.WaitFor(ctx, func(p []time.Time) bool { return countEqual(p, idle) >= 2 }) {
		t.Fatal("the manager did not take the pods' change")
	}
	if _, ok := d.askedFor("u1"); ok || len(e.store.Current().Identities) != 0 {
		t.Fatal("pod entries applied before the CA's first state")
	}
	d.states <- upstream.State{Bundle: ca.Bundle()}
	e.waitSnapshot("both pods", func(s *state.Snapshot) bool { return find(s, "u1") != nil && find(s, "u2") != nil })
}

// countEqual counts the times in p equal to at.
func countEqual(p []time.Time, at time.Time) int {
	n := 0
	for _, x := range p {
		if x.Equal(at) {
			n++
		}
	}
	return n
}

// A taint the CA pushes reaches the pods' identities too (before the
// domain seam, the merged Kubernetes stream dropped tainted authorities).
func TestTaintReplacesPodIdentities(t *testing.T) {
	ca := catest.New(t, td)
	d := &domainCA{ca: ca, states: make(chan upstream.State, 1)}
	pods := &fakePods{ch: make(chan struct{}, 1), entries: []upstream.Entry{podEntry("u1", "cart")}}
	e := startDomain(t, d, pods)
	d.states <- upstream.State{Bundle: ca.Bundle()}
	first := find(e.waitSnapshot("pod served", serving("u1")), "u1")
	d.states <- upstream.State{Bundle: ca.Bundle(), Tainted: first.Certificates[1:2]}
	e.waitSnapshot("pod SVID replaced", func(s *state.Snapshot) bool {
		got := find(s, "u1")
		return got != nil && got.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0
	})
}
