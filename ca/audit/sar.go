package audit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/k8sid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
)

// SAR resource attributes: callers need the verb on resource "audit" in
// API group "castellan.dev" (cluster-scoped), e.g. in a ClusterRole:
//
//	rules:
//	- apiGroups: ["castellan.dev"]
//	  resources: ["audit"]
//	  verbs: ["get", "update"]
const (
	SARGroup    = "castellan.dev"
	SARResource = "audit"
)

// sarCacheTTL is how long a SubjectAccessReview answer is reused.
const sarCacheTTL = 30 * time.Second

// SARVerb returns the verb a SubjectAccessReview checks for an audit
// method: "update" for Revoke, "get" for everything else.
func SARVerb(fullMethod string) string {
	if strings.HasSuffix(fullMethod, "/Revoke") {
		return "update"
	}
	return "get"
}

// SubjectAccessReview authorizes mutual-TLS callers whose SPIFFE ID is a
// Kubernetes service account (spiffe://<td>/ns/<ns>/sa/<sa>) by asking the
// API server whether that service account may use the audit API (see
// SARGroup, SARResource, SARVerb). Answers are cached for 30 seconds per
// service account and verb.
func SubjectAccessReview(client authzclient.SubjectAccessReviewsGetter, cfg SARConfig) Authorizer {
	c := &sarCache{client: client, clock: clock.OrSystem(cfg.Clock), answers: map[string]sarAnswer{}}
	return c.authorize
}

// SARConfig holds the settings of SubjectAccessReview; its zero value is
// the default.
type SARConfig struct {
	// Clock expires cached answers (nil: the wall clock).
	Clock clock.Clock
}

type sarAnswer struct {
	allowed bool
	reason  string
	expires time.Time
}

type sarCache struct {
	client  authzclient.SubjectAccessReviewsGetter
	clock   clock.Clock
	mu      sync.Mutex
	answers map[string]sarAnswer
}

func (c *sarCache) authorize(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "audit: no peer information")
	}
	id, err := callerID(p)
	if err != nil {
		return err
	}
	acct, err := k8sid.FromID(id)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "audit: %s is not a Kubernetes service account identity (spiffe://<td>/ns/<ns>/sa/<sa>)", id)
	}
	method, _ := grpc.Method(ctx)
	verb := SARVerb(method)
	user := acct.Username()
	key := user + " " + verb
	now := c.clock.Now()
	c.mu.Lock()
	a, cached := c.answers[key]
	c.mu.Unlock()
	if !cached || !now.Before(a.expires) {
		if a, err = c.review(ctx, acct, verb); err != nil {
			return err
		}
		a.expires = now.Add(sarCacheTTL)
		c.mu.Lock()
		c.answers[key] = a
		c.mu.Unlock()
	}
	if !a.allowed {
		return status.Errorf(codes.PermissionDenied, "audit: Kubernetes RBAC does not allow %s to %s %s.%s: %s", user, verb, SARResource, SARGroup, a.reason)
	}
	return nil
}

func (c *sarCache) review(ctx context.Context, acct k8sid.ServiceAccount, verb string) (sarAnswer, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   acct.Username(),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + acct.Namespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group: SARGroup, Resource: SARResource, Verb: verb,
		},
	}}
	resp, err := c.client.SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return sarAnswer{}, status.Error(codes.Unavailable, fmt.Sprintf("audit: SubjectAccessReview failed: %v", err))
	}
	return sarAnswer{allowed: resp.Status.Allowed && !resp.Status.Denied, reason: resp.Status.Reason}, nil
}

// AnyOf allows a call that any of the authorizers allows. When all refuse,
// the first refusal is returned.
func AnyOf(authorizers ...Authorizer) Authorizer {
	return func(ctx context.Context) error {
		var first error
		for _, a := range authorizers {
			err := a(ctx)
			if err == nil {
				return nil
			}
			if first == nil {
				first = err
			}
		}
		if first == nil {
			return denyAll(ctx)
		}
		return first
	}
}
