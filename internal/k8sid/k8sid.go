// Package k8sid owns Castellan's Kubernetes identity rule: which SPIFFE ID
// a service account has (spiffe://<td>/ns/<namespace>/sa/<name>), which
// service account a pod runs as (the API server's "default" when the pod
// names none), and when a pod may hold that identity (on the asking node,
// not terminated or being deleted, running as the account, with the UID
// the request names). The CA's authorizers, the Istio endpoint, the audit
// API's SubjectAccessReview check and the agent's Kubernetes attestor and
// pod entries all read the rule from here.
package k8sid

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
)

// DefaultServiceAccount is the account of a pod that names none.
const DefaultServiceAccount = "default"

// ErrNotServiceAccount is wrapped by the errors of New and FromID.
var ErrNotServiceAccount = errors.New("not a Kubernetes service account identity")

// ServiceAccount is a Kubernetes service account, namespace and name. The
// zero value is no account; New and FromID return only valid ones.
type ServiceAccount struct {
	Namespace string
	Name      string
}

// New returns the service account name in namespace. Both must be valid
// SPIFFE ID path segments (non-empty, no "/", not "." or "..").
func New(namespace, name string) (ServiceAccount, error) {
	for _, seg := range []string{namespace, name} {
		if err := spiffeid.ValidatePathSegment(seg); err != nil {
			return ServiceAccount{}, fmt.Errorf("%w: %s/%s: %w", ErrNotServiceAccount, namespace, name, err)
		}
	}
	return ServiceAccount{Namespace: namespace, Name: name}, nil
}

// FromID returns the service account whose identity id is, reading its
// path /ns/<namespace>/sa/<name>; the trust domain is the caller's to
// check (id.MemberOf).
func FromID(id spiffeid.ID) (ServiceAccount, error) {
	seg := strings.Split(id.Path(), "/")
	if len(seg) != 5 || seg[0] != "" || seg[1] != "ns" || seg[3] != "sa" || seg[2] == "" || seg[4] == "" {
		return ServiceAccount{}, fmt.Errorf("%w: %s; want spiffe://%s/ns/<namespace>/sa/<service-account>",
			ErrNotServiceAccount, id, id.TrustDomain().Name())
	}
	return ServiceAccount{Namespace: seg[2], Name: seg[4]}, nil
}

// ID returns the account's SPIFFE ID in trust domain td.
func (a ServiceAccount) ID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "ns", a.Namespace, "sa", a.Name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %s makes no SPIFFE ID: %w", ErrNotServiceAccount, a, err)
	}
	return id, nil
}

// String returns "<namespace>/<name>".
func (a ServiceAccount) String() string { return a.Namespace + "/" + a.Name }

// usernamePrefix starts the Kubernetes user name of every service account.
const usernamePrefix = "system:serviceaccount:"

// Username returns the account's user name in Kubernetes authentication
// and authorization ("system:serviceaccount:<namespace>:<name>").
func (a ServiceAccount) Username() string {
	return usernamePrefix + a.Namespace + ":" + a.Name
}

// FromUsername returns the service account whose Kubernetes user name is
// user (as a TokenReview reports it). It checks the form only; ID checks
// that the names make a SPIFFE ID.
func FromUsername(user string) (ServiceAccount, error) {
	rest, isSA := strings.CutPrefix(user, usernamePrefix)
	ns, name, ok := strings.Cut(rest, ":")
	if !isSA || !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return ServiceAccount{}, fmt.Errorf("%w: user %q; want %s<namespace>:<name>", ErrNotServiceAccount, user, usernamePrefix)
	}
	return ServiceAccount{Namespace: ns, Name: name}, nil
}

// OfPod returns the service account pod runs as: the one its spec names,
// or DefaultServiceAccount (as the API server's admission sets it).
func OfPod(pod *corev1.Pod) ServiceAccount {
	name := pod.Spec.ServiceAccountName
	if name == "" {
		name = DefaultServiceAccount
	}
	return ServiceAccount{Namespace: pod.Namespace, Name: name}
}

// Live reports whether pod is neither being deleted nor terminated
// (phase Succeeded or Failed).
func Live(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// RunsAs reports whether pod is live on node and runs as account.
func RunsAs(pod *corev1.Pod, node string, account ServiceAccount) bool {
	return pod.Spec.NodeName == node && Live(pod) && OfPod(pod) == account
}
