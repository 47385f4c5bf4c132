package workloadapi

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// bundleWatcher receives every X509BundleSet update.
type bundleWatcher struct{ ch chan *x509bundle.Set }

func (w bundleWatcher) OnX509BundlesUpdate(s *x509bundle.Set) { w.ch <- s }
func (w bundleWatcher) OnX509BundlesWatchError(error)         {}

// TestBundleChangeAloneIsPushedToOpenStreams publishes a new root (a CA
// rotation's prepared authority) with the same SVID: both open streams,
// FetchX509SVID and FetchX509Bundles, receive the bundle with every root,
// the SVID unchanged.
func TestBundleChangeAloneIsPushedToOpenStreams(t *testing.T) {
	h := newHarness(t, workload)
	c := client(t, h)
	svids := watcher{ch: make(chan *workloadapi.X509Context, 4)}
	bundles := bundleWatcher{ch: make(chan *x509bundle.Set, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = c.WatchX509Context(ctx, svids); done <- struct{}{} }()
	go func() { _ = c.WatchX509Bundles(ctx, bundles); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	first := recv(t, svids.ch)
	recv(t, bundles.ch)

	next := catest.New(t, spiffeid.RequireTrustDomainFromString("cluster.local"))
	roots := append(h.ca.Bundle().X509Authorities(), next.Bundle().X509Authorities()...)
	cur := h.store.Current()
	h.store.Publish(cur.Identities, x509bundle.FromX509Authorities(h.ca.TrustDomain, roots))

	x := recv(t, svids.ch)
	b, ok := x.Bundles.Get(h.ca.TrustDomain)
	if !ok || len(b.X509Authorities()) != 2 || !slices.ContainsFunc(b.X509Authorities(), next.Bundle().X509Authorities()[0].Equal) {
		t.Fatalf("FetchX509SVID bundle after the change: %v, want both roots", b)
	}
	if !x.DefaultSVID().Certificates[0].Equal(first.DefaultSVID().Certificates[0]) {
		t.Fatal("the SVID changed with the bundle")
	}
	set := recv(t, bundles.ch)
	if b, ok := set.Get(h.ca.TrustDomain); !ok || len(b.X509Authorities()) != 2 {
		t.Fatalf("FetchX509Bundles after the change: %v, want both roots", b)
	}
	// The old root leaves (its authority revoked): pushed too.
	h.store.Publish(cur.Identities, next.Bundle())
	if b, _ := recv(t, svids.ch).Bundles.Get(h.ca.TrustDomain); len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(next.Bundle().X509Authorities()[0]) {
		t.Fatalf("bundle after the old root left: %v", b)
	}
}

func recv[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("no update within 5s")
		var zero T
		return zero
	}
}
