package audit

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
)

// fakeRBAC answers SubjectAccessReviews from a set of "user verb" grants
// and counts the reviews.
type fakeRBAC struct {
	mu      sync.Mutex
	grants  map[string]bool
	reviews int
}

func (f *fakeRBAC) SubjectAccessReviews() authzclient.SubjectAccessReviewInterface { return f }

func (f *fakeRBAC) Create(_ context.Context, sar *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reviews++
	ra := sar.Spec.ResourceAttributes
	out := sar.DeepCopy()
	out.Status.Allowed = ra.Group == SARGroup && ra.Resource == SARResource && f.grants[sar.Spec.User+" "+ra.Verb]
	if !out.Status.Allowed {
		out.Status.Reason = "no RBAC rule"
	}
	return out, nil
}

func TestSubjectAccessReviewAuthorizesServiceAccounts(t *testing.T) {
	l := openLedger(t, 2)
	ca := newTestCA(t)
	rbac := &fakeRBAC{grants: map[string]bool{"system:serviceaccount:security:auditor get": true}}
	clk := clocktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	svc := NewService(l, Config{Authorizer: AnyOf(AdminAuthorizer(), SubjectAccessReview(rbac, SARConfig{Clock: clk}))})
	serverCert := ca.issue(t, "spiffe://cluster.local/castellan/server")
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientCAs: ca.pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13,
	})))
	svc.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	client := func(id string) auditv1.AuditServiceClient {
		cert := ca.issue(t, id)
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: ca.pool, ServerName: "castellan", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return auditv1.NewAuditServiceClient(conn)
	}
	ctx := context.Background()
	auditor := client("spiffe://cluster.local/ns/security/sa/auditor")
	for i := 0; i < 3; i++ {
		if _, err := auditor.Checkpoint(ctx, &auditv1.CheckpointRequest{}); err != nil {
			t.Fatalf("auditor read refused: %v", err)
		}
	}
	rbac.mu.Lock()
	reviews := rbac.reviews
	rbac.mu.Unlock()
	if reviews != 1 {
		t.Fatalf("%d reviews for three calls, want 1 (cached)", reviews)
	}
	if _, err := auditor.Revoke(ctx, &auditv1.RevokeRequest{Serial: "a000", Reason: "x"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor revoke without update verb: %v", err)
	}
	other := client("spiffe://cluster.local/ns/bookinfo/sa/reviews")
	if _, err := other.Checkpoint(ctx, &auditv1.CheckpointRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unprivileged service account: %v", err)
	}
	agent := client("spiffe://cluster.local/castellan/agent/node-1")
	if _, err := agent.Checkpoint(ctx, &auditv1.CheckpointRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("non-service-account identity: %v", err)
	}
	// A revoked grant takes effect once the cached answer expires.
	rbac.mu.Lock()
	delete(rbac.grants, "system:serviceaccount:security:auditor get")
	rbac.mu.Unlock()
	clk.Advance(time.Minute)
	if _, err := auditor.Checkpoint(ctx, &auditv1.CheckpointRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("after the grant was removed: %v", err)
	}
}
