// Package podentries gives a node agent on Kubernetes one identity per pod
// on its node, with no registration step: it is an entry source of the
// agent's manager (manager.EntrySource), which merges its entries with the
// CA's. Each live pod is one entry — SPIFFE ID
// spiffe://<td>/ns/<ns>/sa/<sa>, served only to callers attested with
// that pod's UID — whose SVID is requested by pod UID, which the CA checks
// against the API server (node restriction). A pod that goes away drops
// out of the entries, and the manager stops serving and deletes its SVID.
package podentries

import (
	"slices"
	"strings"

	"github.com/castellan-dev/castellan/agent/attest/k8sattest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/castellan-dev/castellan/internal/k8sid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Pods lists the live pods on the node and signals changes;
// *k8sattest.Attestor implements it.
type Pods interface {
	Pods() []k8sattest.Pod
	Watch() (<-chan struct{}, func())
}

// Source gives the pods of a node as entries of one trust domain. It is
// safe for concurrent use.
type Source struct {
	pods Pods
	td   spiffeid.TrustDomain
}

// New returns the entries of the pods of pods in trust domain td.
func New(pods Pods, td spiffeid.TrustDomain) *Source {
	return &Source{pods: pods, td: td}
}

// Entries returns one entry per pod, sorted by ID (the pod UID).
func (s *Source) Entries() []upstream.Entry {
	return Entries(s.td, s.pods.Pods())
}

// Watch returns a channel that receives a value after the pods change,
// and a function that stops the watch.
func (s *Source) Watch() (<-chan struct{}, func()) { return s.pods.Watch() }

// Entries returns one entry per pod, sorted by ID. A pod whose namespace
// or service account is not a valid SPIFFE ID path segment has none (the
// CA would refuse it anyway).
func Entries(td spiffeid.TrustDomain, pods []k8sattest.Pod) []upstream.Entry {
	out := make([]upstream.Entry, 0, len(pods))
	for _, p := range pods {
		id, err := k8sid.ServiceAccount{Namespace: p.Namespace, Name: p.ServiceAccount}.ID(td)
		if err != nil || p.UID == "" {
			continue
		}
		out = append(out, upstream.Entry{
			ID:        p.UID,
			SPIFFEID:  id,
			Selectors: []state.Selector{{Type: k8sattest.SelectorType, Value: "pod-uid:" + p.UID}},
			PodUID:    p.UID,
		})
	}
	slices.SortFunc(out, func(a, b upstream.Entry) int { return strings.Compare(a.ID, b.ID) })
	return out
}
